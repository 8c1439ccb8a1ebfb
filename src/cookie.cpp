#include "cookie.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.hpp"

namespace distflow {
namespace {

/// Closes the descriptor however the load ends.
struct FileCloser {
  int fd;
  ~FileCloser() { ::close(fd); }
};

}  // namespace

std::string load_cookie_file(const std::string& path) {
  const std::string where = "cookie file '" + path + "'";
  // O_NONBLOCK: a FIFO in its place must not hang the start; it is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0)
    throw Error("cannot read " + where + ": " + std::strerror(errno));
  FileCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw Error("cannot read " + where + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw Error(where + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw Error(std::string("permissions ") + mode + " for '" + path +
                "' are too open: it must not be accessible by group or others (chmod 600 " + path +
                ")");
  }
  if (st.st_size > static_cast<off_t>(kMaxCookieBytes))
    throw Error(where + " is larger than " + std::to_string(kMaxCookieBytes) + " bytes");
  std::string cookie(kMaxCookieBytes + 1, '\0');
  std::size_t size = 0;
  while (size < cookie.size()) {
    const ssize_t n = ::read(fd, cookie.data() + size, cookie.size() - size);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw Error("cannot read " + where + ": " + std::strerror(errno));
    if (n == 0)
      break;
    size += static_cast<std::size_t>(n);
  }
  if (size > kMaxCookieBytes)  // it grew since fstat()
    throw Error(where + " is larger than " + std::to_string(kMaxCookieBytes) + " bytes");
  cookie.resize(size);
  if (!cookie.empty() && cookie.back() == '\n')
    cookie.pop_back();
  if (cookie.empty())
    throw Error(where + " is empty");
  return cookie;
}

}  // namespace distflow
