#include "peer_watch.hpp"

#include <cerrno>
#include <cstring>
#include <unistd.h>

#include <fmt/format.h>

#include "credentials.hpp"
#include "errors.hpp"
#include "json.hpp"

namespace distflow {
namespace {

bool matches(const WatchOptions& options, const NodeInfo& peer) {
  return options.node.empty() || peer.alias == options.node || peer.node_id == options.node;
}

void write_line(int fd, const std::string& line) {
  std::size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = ::write(fd, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      throw Error(fmt::format("cannot write output: {}", std::strerror(errno)));
    off += static_cast<std::size_t>(n);
  }
}

}  // namespace

std::string format_peer_event(std::string_view event, const NodeInfo& peer, std::string_view reason,
                              bool json) {
  std::string line;
  if (json) {
    line = "{\"event\":";
    append_json_string(line, event);
    line += ",\"peer\":";
    append_node_info(line, peer);
    if (!reason.empty()) {
      line += ",\"reason\":";
      append_json_string(line, reason);
    }
    line += "}\n";
    return line;
  }
  const std::string_view word = event.starts_with("peer:") ? event.substr(5) : event;
  // Names come from the PMD: escaped, so that none can act on the terminal.
  line = fmt::format("{:<7} {}  id={}  {}:{}", printable(word),
                     peer.alias.empty() ? "-" : printable(peer.alias), printable(peer.node_id),
                     printable(peer.host), peer.port);
  if (!reason.empty())
    line += fmt::format("  reason={}", printable(reason));
  line += '\n';
  return line;
}

int watch_peers(const WatchOptions& options, int out_fd) {
  const Credentials credentials(options.security);
  auto client = PmdClient::connect(options.pmd, std::chrono::seconds(2), &credentials,
                                   "watch-" + std::to_string(::getpid()));
  bool present = false;
  for (const NodeInfo& peer : client->watch(options.cluster)) {
    if (!matches(options, peer))
      continue;
    present = true;
    write_line(out_fd, format_peer_event("peer:present", peer, {}, options.json));
  }
  if (options.until_leave && !present)
    return 0;
  for (;;) {
    const auto event = client->next_event(std::chrono::seconds(1));
    if (!event || !event->peer || !matches(options, *event->peer))
      continue;
    write_line(out_fd, format_peer_event(event->event, *event->peer, event->reason, options.json));
    if (options.until_leave && event->event == "peer:leave")
      return 0;
  }
}

}  // namespace distflow
