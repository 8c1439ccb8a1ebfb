#include "shared_fd.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.hpp"

namespace distflow {

int private_nonblocking_fd(int fd, bool for_write) {
  struct stat st {};
  if (::fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) {
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    const int reopened =
        ::open(path.c_str(), (for_write ? O_WRONLY : O_RDONLY) | O_NONBLOCK | O_CLOEXEC);
    if (reopened >= 0)
      return reopened;
  }
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) {
    throw Error("cannot use fd " + std::to_string(fd) +
                (for_write ? " for output: " : " for input: ") + std::strerror(errno));
  }
  return copy;
}

bool is_dev_null(int fd) {
  struct stat of_fd {};
  struct stat of_null {};
  return ::fstat(fd, &of_fd) == 0 && ::stat("/dev/null", &of_null) == 0 && S_ISCHR(of_fd.st_mode) &&
         of_fd.st_rdev == of_null.st_rdev;
}

}  // namespace distflow
