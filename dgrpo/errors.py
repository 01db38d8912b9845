"""The exceptions a user can act on; only `cli.py` turns them into output."""


class UserError(Exception):
    """A problem the user can fix: `problem` says what is wrong, `fix` what to do."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)

    def __reduce__(self):
        # Keep problem and fix apart when the error crosses a process boundary.
        return (type(self), (self.problem, self.fix))


class DivergedError(UserError):
    """Training produced a NaN/inf loss; the run stopped and its last good checkpoint is kept.

    Not bad input, so the CLI exits 1 instead of 2, but the message has the same shape.
    """
