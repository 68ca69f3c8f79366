"""The two error types of the project.

`UserError` is for problems in what the user gave us (a model, an input, a board, a missing tool): its message says
what is wrong and what to do, and the CLI prints it without a traceback. `InternalError` is a bug in tvm-pipeline.
"""


class UserError(Exception):
    """A problem with the user's model, input, options or machine; the message is actionable."""


class InternalError(Exception):
    """A broken invariant inside tvm-pipeline (a bug): never the user's fault."""
