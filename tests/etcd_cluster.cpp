#include "etcd_cluster.hpp"

#include <arpa/inet.h>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <random>
#include <sstream>
#include <stdexcept>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include "subprocess.hpp"
#include "support.hpp"

namespace distflow::test {
namespace {

using Clock = std::chrono::steady_clock;

/// GET /health on 127.0.0.1:port within `timeout`: true when etcd says "true".
bool health_ok(std::uint16_t port, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const auto wait_for = [&](short events) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      return false;
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, static_cast<int>(left.count())) == 1;
  };
  bool ok = false;
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno == EINPROGRESS) {
    int error = 0;
    socklen_t len = sizeof error;
    if (wait_for(POLLOUT) && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 &&
        error == 0) {
      const std::string request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
      if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
        char buf[1024];
        while (wait_for(POLLIN)) {
          const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
          if (n <= 0)
            break;
          answer.append(buf, static_cast<std::size_t>(n));
        }
        ok = answer.find("\"health\":\"true\"") != std::string::npos;
      }
    }
  }
  ::close(fd);
  return ok;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::string etcd_binary() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/etcd";
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return {};
}

EtcdCluster::EtcdCluster(int members, const EtcdTls& tls, std::chrono::milliseconds timeout)
    : tls_(tls) {
  if (members != 1 && members != 3)
    throw std::invalid_argument("EtcdCluster: 1 or 3 members");
  const std::string binary = etcd_binary();
  if (binary.empty())
    throw std::runtime_error(kNoEtcd);
  std::string dir_template = (std::filesystem::temp_directory_path() / "distflow-etcd-XXXXXX");
  if (::mkdtemp(dir_template.data()) == nullptr)
    throw std::runtime_error("cannot create a temporary directory for etcd");
  dir_ = dir_template;
  token_ = "distflow-test-" + std::to_string(std::random_device{}());

  // A port picked free can be taken before etcd binds it: then the member exits,
  // and the whole cluster starts again on new ports (a few times at most).
  for (int attempt = 0; attempt < 3; ++attempt) {
    members_.clear();
    members_.resize(static_cast<std::size_t>(members));
    initial_cluster_.clear();
    for (int i = 0; i < members; ++i) {
      auto& m = members_[static_cast<std::size_t>(i)];
      m.name = "m" + std::to_string(i);
      m.data_dir = dir_ + "/" + m.name + "-" + std::to_string(attempt);
      m.log_file = dir_ + "/" + m.name + "-" + std::to_string(attempt) + ".log";
      m.client_port = free_port();
      m.peer_port = free_port();
      m.health_port = tls_.cert.empty() ? m.client_port : free_port();
      if (!initial_cluster_.empty())
        initial_cluster_ += ',';
      initial_cluster_ += m.name + "=http://127.0.0.1:" + std::to_string(m.peer_port);
    }
    for (auto& m : members_)
      launch(m);
    if (wait_healthy(timeout))
      return;
    bool exited = false;
    for (auto& m : members_)
      exited = exited || m.process->try_wait().has_value();
    if (!exited)
      break;
  }
  const std::string logs = all_logs();
  for (auto& m : members_)
    m.process.reset();
  std::filesystem::remove_all(dir_);
  throw std::runtime_error("etcd did not become healthy:\n" + logs);
}

EtcdCluster::~EtcdCluster() {
  for (auto& m : members_)
    m.process.reset();  // SIGKILL by PID and reap
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void EtcdCluster::launch(Member& m) {
  const std::string client = std::to_string(m.client_port);
  const std::string scheme = tls_.cert.empty() ? "http" : "https";
  SpawnOptions options;
  options.argv = {etcd_binary(),
                  "--name",
                  m.name,
                  "--data-dir",
                  m.data_dir,
                  "--listen-client-urls",
                  scheme + "://127.0.0.1:" + client,
                  "--advertise-client-urls",
                  scheme + "://127.0.0.1:" + client,
                  "--listen-peer-urls",
                  "http://127.0.0.1:" + std::to_string(m.peer_port),
                  "--initial-advertise-peer-urls",
                  "http://127.0.0.1:" + std::to_string(m.peer_port),
                  "--initial-cluster",
                  initial_cluster_,
                  "--initial-cluster-state",
                  "new",
                  "--initial-cluster-token",
                  token_,
                  "--logger",
                  "zap",
                  "--log-outputs",
                  "stderr",
                  "--log-level",
                  "warn"};
  if (!tls_.cert.empty()) {
    // Health is polled over plain HTTP on a second client URL.
    options.argv[6] += ",http://127.0.0.1:" + std::to_string(m.health_port);
    options.argv.insert(options.argv.end(), {"--cert-file", tls_.cert, "--key-file", tls_.key});
    if (!tls_.client_ca.empty())
      options.argv.insert(options.argv.end(),
                          {"--client-cert-auth", "--trusted-ca-file", tls_.client_ca});
  }
  options.out = Stdio::log_file;
  options.err = Stdio::log_file;
  options.log_file = m.log_file;
  options.in = Stdio::null;
  options.parent_death_signal = SIGKILL;
  m.process = std::make_unique<Subprocess>(options);
}

std::string EtcdCluster::url() const {
  std::string out = tls_.cert.empty() ? "etcd://" : "etcds://";
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (i > 0)
      out += ',';
    out += "127.0.0.1:" + std::to_string(members_[i].client_port);
  }
  return out;
}

std::uint16_t EtcdCluster::client_port(int member) const {
  return members_.at(static_cast<std::size_t>(member)).client_port;
}

int EtcdCluster::pid(int member) const {
  const auto& m = members_.at(static_cast<std::size_t>(member));
  return m.process ? m.process->pid() : -1;
}

void EtcdCluster::stop(int member) {
  auto& m = members_.at(static_cast<std::size_t>(member));
  if (m.process)
    m.process->stop(std::chrono::seconds(5));
  m.process.reset();
}

void EtcdCluster::kill(int member) {
  auto& m = members_.at(static_cast<std::size_t>(member));
  if (m.process) {
    m.process->signal(SIGKILL);
    m.process->wait(std::chrono::seconds(5));
  }
  m.process.reset();
}

void EtcdCluster::restart(int member) {
  auto& m = members_.at(static_cast<std::size_t>(member));
  if (!m.process)
    launch(m);
}

bool EtcdCluster::healthy(int member) const {
  const auto& m = members_.at(static_cast<std::size_t>(member));
  if (!m.process)
    return false;
  return health_ok(m.health_port, 500ms);
}

bool EtcdCluster::wait_healthy(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    bool all = true;
    for (std::size_t i = 0; i < members_.size() && all; ++i) {
      auto& m = members_[i];
      if (!m.process)
        continue;
      if (m.process->try_wait().has_value())
        return false;  // it exited: a port was taken, or a bad flag (see its log)
      all = healthy(static_cast<int>(i));
    }
    if (all)
      return true;
    if (Clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(20ms);  // poll interval, not a synchronisation
  }
}

std::string EtcdCluster::log(int member) const {
  return read_file(members_.at(static_cast<std::size_t>(member)).log_file);
}

std::string EtcdCluster::all_logs() const {
  std::string out;
  for (std::size_t i = 0; i < members_.size(); ++i)
    out += "--- " + members_[i].name + " ---\n" + log(static_cast<int>(i));
  return out;
}

}  // namespace distflow::test
