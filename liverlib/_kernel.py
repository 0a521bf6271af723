"""The IPython kernel of ``liverlib run``: ipykernel, with its stderr sent to the run's log.

TensorFlow and ipykernel print start-up lines on the kernel's stderr; they
belong in ``RUN/notebooks/kernel.log``, not on the user's console. Cell output
and errors still reach the executed notebooks as usual.
"""

import os

log = os.environ.get("LIVERLIB_KERNEL_LOG")
if log:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)

from ipykernel import kernelapp  # noqa: E402

kernelapp.launch_new_instance()
