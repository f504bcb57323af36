"""The one exception type for problems a user can cause (bad input, files, parameters)."""


class WpsSamError(ValueError):
    """A user-caused problem; the message names the offending input in one line.

    The CLI prints it without a traceback and exits non-zero; the ROS node logs it
    (throttled) and keeps processing the next frame.
    """
