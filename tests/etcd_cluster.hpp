#pragma once

// A real etcd for the tests: one member, or a three-member cluster on 127.0.0.1
// (each member its own client and peer port, picked free), in a temporary data
// directory removed afterwards. Every member is a child process stopped by its
// PID; every wait polls /health with a deadline. Tests skip (with a message)
// when etcd_binary() is empty: Debian's etcd-server is not installed.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace distflow {
class Subprocess;
}

namespace distflow::test {

using namespace std::chrono_literals;

/// The etcd executable found on PATH, or empty.
std::string etcd_binary();
/// The message a test that needs etcd gives when it skips.
inline constexpr const char* kNoEtcd = "etcd not installed (Debian etcd-server): skipped";

/// TLS for the members' client URLs (PEM files): they serve https and, with
/// `client_ca`, require client certificates signed by it.
struct EtcdTls {
  std::string cert, key, client_ca;
};

class EtcdCluster {
 public:
  /// Starts `members` (1 or 3) and waits until every one reports healthy.
  /// Throws std::runtime_error (with the members' logs) when they do not in time.
  explicit EtcdCluster(int members = 1, const EtcdTls& tls = {},
                       std::chrono::milliseconds timeout = 30s);
  ~EtcdCluster();  ///< SIGKILLs the members still running, removes the data
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  /// `etcd://127.0.0.1:p0,127.0.0.1:p1,...` (`etcds://` with TLS).
  std::string url() const;
  std::uint16_t client_port(int member) const;
  /// The member's PID, or -1 when it is not running.
  int pid(int member) const;

  /// SIGTERM, a bounded wait for the exit, then SIGKILL; reaped.
  void stop(int member);
  /// SIGKILL, reaped.
  void kill(int member);
  /// Starts a stopped member again (same name, data and ports); does not wait.
  void restart(int member);
  /// True once every running member answers /health with "true" within `timeout`.
  bool wait_healthy(std::chrono::milliseconds timeout = 20s);
  /// One /health request to `member` (a few hundred ms at most).
  bool healthy(int member) const;
  /// The member's log so far (for failure messages).
  std::string log(int member) const;

 private:
  struct Member {
    std::string name, data_dir, log_file;
    std::uint16_t client_port = 0, peer_port = 0;
    std::uint16_t health_port = 0;  ///< plain HTTP /health (the client port unless TLS)
    std::unique_ptr<Subprocess> process;
  };
  void launch(Member& member);
  std::string all_logs() const;

  std::string dir_;
  std::string initial_cluster_;
  std::string token_;
  EtcdTls tls_;
  std::vector<Member> members_;
};

}  // namespace distflow::test
