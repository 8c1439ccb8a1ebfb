#pragma once

// The standard streams a command inherits are shared with other processes (the
// shell's terminal, the other end of a pipeline). Event loops need them
// non-blocking, and setting O_NONBLOCK on an inherited file description changes
// it for everyone who shares it (a terminal left non-blocking breaks the shell).
// These helpers give a private description instead.

namespace distflow {

/// An fd for what `fd` refers to that is ours alone and non-blocking where that
/// matters: a pipe, FIFO or terminal is opened anew through /proc/self/fd with
/// O_NONBLOCK (`for_write`: O_WRONLY, else O_RDONLY); anything else (a regular file,
/// which never blocks for long, or a socket) is dup()ed. Close-on-exec. Throws
/// distflow::Error when neither works.
int private_nonblocking_fd(int fd, bool for_write);

/// True when `fd` is /dev/null (a background job of a script gets it as stdin).
bool is_dev_null(int fd);

}  // namespace distflow
