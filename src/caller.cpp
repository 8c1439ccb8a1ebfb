#include "caller.hpp"

#include <cerrno>
#include <cstring>
#include <deque>
#include <future>
#include <poll.h>
#include <random>
#include <thread>
#include <unistd.h>

#include <fmt/format.h>

#include "errors.hpp"
#include "json.hpp"
#include "ndjson.hpp"
#include "node_runtime.hpp"
#include "transport.hpp"

namespace distflow {
namespace {

std::unique_ptr<NodeRuntime> start_caller(const CallOptions& options) {
  NodeOptions node;
  std::random_device device;
  node.node_id = fmt::format("call-{}-{:06x}", ::getpid(), device() & 0xffffffu);
  node.pmd = options.pmd;
  node.auto_start_pmd = false;  // nobody would be there to answer
  node.security = options.security;
  node.listen_host = options.listen_host;
  node.heartbeat_interval = std::chrono::seconds(1);
  return NodeRuntime::start(std::move(node));
}

std::string compact(std::string_view payload) {
  std::string out;
  append_json_compact(out, payload);
  return out;
}

}  // namespace

std::string call_once(const CallOptions& options, std::string_view body) {
  JsonValidator validator;
  std::string why;
  if (validator.validate(body, &why))
    throw Error("invalid JSON body: " + why);
  auto node = start_caller(options);
  auto reply = node->call(options.target, body, options.timeout);
  // The future always ends: the call's own deadline, or at once on failure.
  std::string payload = compact(reply.get().payload());
  node->shutdown();
  return payload;
}

CallResult call_stream(const CallOptions& options, int input_fd, const ReplySink& reply,
                       const CallDiagnostic& diagnostic) {
  auto node = start_caller(options);
  CallResult result;
  struct Waiting {
    std::uint64_t line;
    std::future<Envelope> reply;
  };
  std::deque<Waiting> waiting;
  auto settle_front = [&] {
    Waiting& front = waiting.front();
    try {
      reply(compact(front.reply.get().payload()));
      ++result.answered;
    } catch (const Error& e) {
      ++result.failed;
      diagnostic(fmt::format("line {}: {}", front.line, e.what()));
    }
    waiting.pop_front();
  };

  NdjsonReader reader(options.max_line_bytes);
  JsonValidator validator;
  std::string why;
  auto handle = [&](const NdjsonLine& line) {
    if (line.too_long) {
      ++result.failed;
      diagnostic(fmt::format("line {}: longer than the limit of {} bytes", line.number,
                             options.max_line_bytes));
      return;
    }
    if (validator.validate(line.text, &why)) {
      ++result.failed;
      diagnostic(fmt::format("line {}: invalid JSON: {}", line.number, why));
      return;
    }
    while (waiting.size() >= options.inflight)
      settle_front();
    waiting.push_back({line.number, node->call(options.target, line.text, options.timeout)});
  };
  for (;;) {
    // Replies print as they come (in order), also while the input is quiet.
    while (!waiting.empty() &&
           waiting.front().reply.wait_for(std::chrono::seconds(0)) == std::future_status::ready)
      settle_front();
    if (!waiting.empty()) {
      pollfd in{input_fd, POLLIN, 0};
      if (::poll(&in, 1, 20) == 0)
        continue;
    }
    auto room = reader.prepare(64u << 10);
    const ssize_t n = ::read(input_fd, room.data(), room.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw Error(fmt::format("cannot read stdin: {}", std::strerror(errno)));
    if (n == 0)
      break;
    reader.commit(static_cast<std::size_t>(n));
    while (auto line = reader.next())
      handle(*line);
  }
  if (auto line = reader.finish())
    handle(*line);
  while (!waiting.empty())
    settle_front();
  node->shutdown();
  return result;
}

void watch_stats(const CallOptions& options, std::chrono::milliseconds interval,
                 const std::function<bool(std::string_view json)>& sink) {
  auto node = start_caller(options);
  for (;;) {
    const auto asked = std::chrono::steady_clock::now();
    const Envelope answer = node->call(options.target, kStatsRequest, options.timeout).get();
    if (!sink(answer.payload()) || interval.count() == 0)
      break;
    std::this_thread::sleep_until(asked + interval);
  }
  node->shutdown();
}

namespace {

// `key=value` pairs of one flat object (strings unquoted), in order.
std::string flat_pairs(std::string_view object) {
  JsonObjectWalker walker;
  std::string padded(object);
  padded.append(16, ' ');
  if (walker.walk(std::string_view(padded.data(), object.size()), true))
    return std::string(object);
  std::string out, storage;
  for (const JsonMember& member : walker.members()) {
    if (!out.empty())
      out += ' ';
    out += member.key;
    out += '=';
    out += member.value.front() == '"' ? json_string_text(member.value, storage) : member.value;
  }
  return out;
}

}  // namespace

std::string render_stats_text(std::string_view json) {
  JsonObjectWalker walker;
  std::string padded(json);
  padded.append(16, ' ');
  if (walker.walk(std::string_view(padded.data(), json.size()), true))
    return std::string(json) + "\n";
  std::string out, storage;
  std::vector<std::string_view> elements;
  for (const JsonMember& member : walker.members()) {
    const char first = member.value.front();
    if (first == '[' && json_array_elements(member.value, elements)) {
      out += fmt::format("{}: {}\n", member.key, elements.size());
      for (std::string_view element : elements)
        out += fmt::format("  {}\n", flat_pairs(element));
    } else if (first == '{') {
      const std::string pairs = flat_pairs(member.value);
      out += fmt::format("{}: {}\n", member.key, pairs.empty() ? "-" : pairs);
    } else {
      out += fmt::format("{}: {}\n", member.key,
                         first == '"' ? json_string_text(member.value, storage) : member.value);
    }
  }
  return out;
}

}  // namespace distflow
