/* Test stub of the Arduino core API the generated example uses (Serial, micros, millis, delay), with the signatures
 * of the Arduino language reference. Enough to compile the .ino as C++, nothing to run it. */
#ifndef ARDUINO_STUB_H
#define ARDUINO_STUB_H

#include <stddef.h>
#include <stdint.h>

unsigned long millis(void);
unsigned long micros(void);
void delay(unsigned long ms);

class HardwareSerial {
public:
    void begin(unsigned long baud);
    size_t print(const char *text);
    explicit operator bool();
};

extern HardwareSerial Serial;

#endif
