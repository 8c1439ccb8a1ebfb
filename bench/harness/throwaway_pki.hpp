#pragma once

// A throwaway PKI for runs that need TLS (the tests, `distflow bench throughput
// --remote`): a CA and certificates it signed for names and addresses
// (subjectAltName), EC P-256 keys (mode 0600), made with the `openssl` command in
// a private temp dir that is removed with the object.

#include <functional>
#include <string>

namespace distflow {

class ThrowawayPki {
 public:
  /// `ca_name` distinguishes two unrelated CAs. `before_create` learns the
  /// directory's path before it exists (to have it removed even after a SIGKILL).
  /// Throws distflow::Error when the `openssl` command is missing or fails.
  explicit ThrowawayPki(const std::string& ca_name = "distflow-test-ca",
                        const std::function<void(const std::string& dir)>& before_create = {});
  ~ThrowawayPki();  ///< removes the directory and everything in it
  ThrowawayPki(const ThrowawayPki&) = delete;
  ThrowawayPki& operator=(const ThrowawayPki&) = delete;
  struct Files {
    std::string cert, key, ca;
  };
  /// A certificate for CN `name` valid for DNS:localhost and IP:127.0.0.1 (and
  /// `extra_san`, e.g. "IP:10.203.0.2"); `days` < 0 makes one that has expired.
  Files issue(const std::string& name, const std::string& extra_san = {}, int days = 2);
  const std::string& ca() const { return ca_; }
  /// The private directory (0700) the files are in.
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, ca_, ca_key_;
};

}  // namespace distflow
