// The cookie file: read with one trailing newline stripped; refused (with ssh's kind
// of message) when group or others may access it, when empty, too big, or not a
// regular file.

#include "cookie.hpp"

#include <filesystem>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "errors.hpp"

namespace distflow {
namespace {

/// A temp directory, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("distflow-cookie-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::string write(const std::string& name, const std::string& content, mode_t mode = 0600) {
    const std::string file = (path / name).string();
    std::ofstream(file, std::ios::binary) << content;
    ::chmod(file.c_str(), mode);
    return file;
  }
};

std::string load_error(const std::string& file) {
  try {
    load_cookie_file(file);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

}  // namespace

TEST_CASE("cookie: a private file is read, one trailing newline stripped", "[cookie]") {
  TempDir dir;
  CHECK(load_cookie_file(dir.write("plain", "s3cret")) == "s3cret");
  CHECK(load_cookie_file(dir.write("newline", "s3cret\n")) == "s3cret");
  CHECK(load_cookie_file(dir.write("two", "s3cret\n\n")) == "s3cret\n");  // only one
  CHECK(load_cookie_file(dir.write("crlf", "s3cret\r\n")) == "s3cret\r");
  CHECK(load_cookie_file(dir.write("spaces", " s3 cret ")) == " s3 cret ");
  CHECK(load_cookie_file(dir.write("binary", std::string("a\0b", 3))) == std::string("a\0b", 3));
  CHECK(load_cookie_file(dir.write("owner-only-read", "s3cret", 0400)) == "s3cret");
  CHECK(load_cookie_file(dir.write("max", std::string(kMaxCookieBytes, 'x'))).size() ==
        kMaxCookieBytes);
  // The limit is the file's size, its newline included.
  CHECK(
      load_cookie_file(dir.write("max-nl", std::string(kMaxCookieBytes - 1, 'x') + "\n")).size() ==
      kMaxCookieBytes - 1);
  CHECK(load_error(dir.write("over-nl", std::string(kMaxCookieBytes, 'x') + "\n"))
            .ends_with("is larger than 4096 bytes"));
}

TEST_CASE("cookie: refused when group or others may access it", "[cookie]") {
  TempDir dir;
  for (const mode_t mode : {0644u, 0640u, 0604u, 0660u, 0601u, 0610u, 0602u, 0620u, 0777u}) {
    const std::string file = dir.write("open-" + std::to_string(mode), "s3cret", mode);
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
    INFO(octal);
    CHECK(load_error(file) == "permissions " + std::string(octal) + " for '" + file +
                                  "' are too open: it must not be accessible by group or others "
                                  "(chmod 600 " +
                                  file + ")");
  }
}

TEST_CASE("cookie: empty, too big, missing or not a regular file is refused", "[cookie]") {
  TempDir dir;
  const std::string empty = dir.write("empty", "");
  CHECK(load_error(empty) == "cookie file '" + empty + "' is empty");
  const std::string blank = dir.write("blank", "\n");
  CHECK(load_error(blank) == "cookie file '" + blank + "' is empty");
  const std::string big = dir.write("big", std::string(kMaxCookieBytes + 1, 'x'));
  CHECK(load_error(big) == "cookie file '" + big + "' is larger than 4096 bytes");
  const std::string missing = (dir.path / "missing").string();
  CHECK(load_error(missing) ==
        "cannot read cookie file '" + missing + "': No such file or directory");
  const std::string directory = (dir.path / "sub").string();
  std::filesystem::create_directory(directory);
  ::chmod(directory.c_str(), 0700);
  CHECK(load_error(directory) == "cookie file '" + directory + "' is not a regular file");
  const std::string fifo = (dir.path / "fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(load_error(fifo) == "cookie file '" + fifo + "' is not a regular file");  // no hang
  CHECK(load_error("/dev/null") == "cookie file '/dev/null' is not a regular file");
  // A symlink to a private file is followed (as ssh does); to an open one, refused.
  const std::string target = dir.write("target", "s3cret");
  const std::string link = (dir.path / "link").string();
  std::filesystem::create_symlink(target, link);
  CHECK(load_cookie_file(link) == "s3cret");
  ::chmod(target.c_str(), 0644);
  CHECK(load_error(link).starts_with("permissions 0644 for '" + link + "' are too open"));
}

}  // namespace distflow
