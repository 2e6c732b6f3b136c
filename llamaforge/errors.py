"""The one exception type that means "the user gave us something wrong".

The CLI catches `UserError` and prints its message on one line, with no traceback, and exits
non-zero. Messages name the file (and line and field, where there is one), e.g.
``data.jsonl:12: field 'messages': expected a list``.
"""


class UserError(Exception):
    """Bad input: a missing file, a malformed record, a shape mismatch. Printed without traceback."""
