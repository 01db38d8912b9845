"""The one exception type a user can cause; only `cli.py` turns it into output."""


class UserError(Exception):
    """A problem the user can fix: `problem` says what is wrong, `fix` what to do."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)

    def __reduce__(self):
        # Keep problem and fix apart when the error crosses a worker-process boundary.
        return (UserError, (self.problem, self.fix))
