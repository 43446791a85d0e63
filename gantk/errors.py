"""User-facing errors: the CLI prints their message as one line, never a traceback."""


class GantkError(Exception):
    """A problem with the user's input (file, option, checkpoint) described in one line."""


class DataError(GantkError):
    """An image or data set that cannot be read."""


class CheckpointError(GantkError):
    """A checkpoint that does not fit the requested architecture."""
