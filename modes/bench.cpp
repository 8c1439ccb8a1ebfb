// `distflow bench mailbox|throughput|latency|pmd|call|cluster`: flags → a bench config →
// one run_*_bench() call (bench/harness/bench_runner.hpp). `bench worker` is the hidden
// role the multi-process benches re-execute (bench/harness/bench_worker.hpp).

#include <iostream>
#include <memory>
#include <unistd.h>

#include "bench_runner.hpp"
#include "bench_worker.hpp"
#include "modes.hpp"

namespace distflow::modes {
namespace {

struct BenchFlags {
  MailboxBenchConfig mailbox;
  ThroughputBenchConfig throughput;
  LatencyBenchConfig latency;
  PmdBenchConfig pmd;
  CallBenchConfig call;
  std::string call_pin = "same";
  ClusterBenchConfig cluster;
  BenchWorkerConfig worker;
  std::string policy = "block";
  std::string pin = "none";
  std::string paths = "inline,regular";
  bool regular = false;
  long timeout_s = 120;
};

void add_common(CLI::App& sub, BenchCommon& common, long& timeout_s, bool uses_pmd) {
  sub.add_option("--reps", common.reps, "repetitions (the report gives their median)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  sub.add_flag("--json", common.json, "print one JSON document instead of the text report");
  sub.add_option("--csv", common.csv_path, "also write every raw figure to this CSV file");
  sub.add_option("--timeout", timeout_s, "deadline per repetition, seconds")
      ->capture_default_str()
      ->check(CLI::Range(1L, 3600L));
  if (uses_pmd) {
    sub.add_option("--pmd-port", common.pmd_port, "use this PMD (default: start a private one)");
  }
}

BenchCommon finish(BenchCommon common, long timeout_s) {
  common.progress = ::isatty(STDERR_FILENO) == 1;
  common.timeout = std::chrono::seconds(timeout_s);
  return common;
}

}  // namespace

Runner setup_bench(CLI::App& app, const GlobalOptions&) {
  auto f = std::make_shared<BenchFlags>();
  app.require_subcommand(1);

  auto* mailbox = app.add_subcommand("mailbox", "producers x one consumer through the mailbox");
  add_common(*mailbox, f->mailbox.common, f->timeout_s, false);
  mailbox->add_option("--producers", f->mailbox.producers)->capture_default_str();
  mailbox->add_option("--size", f->mailbox.size, "item bytes; 0: an 8-byte integer")
      ->capture_default_str();
  mailbox->add_option("--policy", f->policy)
      ->capture_default_str()
      ->check(CLI::IsMember({"block", "drop-newest", "drop-oldest"}));
  mailbox->add_option("--capacity", f->mailbox.capacity)->capture_default_str();
  mailbox->add_option("--msgs", f->mailbox.msgs)->capture_default_str();
  mailbox
      ->add_option("--batch", f->mailbox.batch,
                   "items per push (try_push_batch, as the I/O thread)")
      ->capture_default_str();

  auto* throughput = app.add_subcommand("throughput", "one-way node->node over loopback");
  add_common(*throughput, f->throughput.common, f->timeout_s, true);
  throughput->add_option("--msgs", f->throughput.msgs, "total messages")->capture_default_str();
  throughput->add_option("--size", f->throughput.size, "payload bytes")->capture_default_str();
  throughput->add_option("--senders", f->throughput.senders, "> 1: also N senders -> 1 receiver")
      ->capture_default_str();
  throughput
      ->add_option("--receivers", f->throughput.receivers, "> 1: also 1 sender -> N receivers")
      ->capture_default_str();
  throughput->add_option("--target", f->throughput.target, "send to this existing node instead");
  throughput->add_flag("--inline", f->throughput.inline_receiver,
                       "the receiver counts in an on_message_inline() handler (I/O thread)");
  throughput->add_flag("!--no-raw", f->throughput.raw_baseline,
                       "skip the raw TCP limit (same frames, no parsing)");
  throughput->add_flag("--via-cli", f->throughput.via_cli,
                       "instead: distflow send - < FILE -> distflow node -> stdout pipe");
  throughput->add_flag("--remote", f->throughput.remote,
                       "instead: node->node across two network-namespace hosts, plain, cookie "
                       "and TLS alternating (needs root and ip; else 127.0.0.2/3)");

  auto* latency = app.add_subcommand(
      "latency",
      "ping-pong round trips, and raw TCP's: over one connection, and over two one-way "
      "connections (the shape of two nodes' links)");
  add_common(*latency, f->latency.common, f->timeout_s, true);
  latency->add_option("--msgs", f->latency.msgs, "round trips per rep")->capture_default_str();
  latency->add_option("--size", f->latency.size, "payload bytes")->capture_default_str();
  latency->add_option("--pin", f->pin, "CPU placement of the two processes")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "same", "different"}));
  latency->add_flag("!--no-raw", f->latency.raw_baseline, "skip the raw TCP baselines");
  latency->add_option("--paths", f->paths, "node paths measured in each rep: inline, regular")
      ->capture_default_str()
      ->check([](const std::string& text) {
        return parse_latency_paths(text) ? std::string() : "expected inline, regular or both";
      });
  latency->add_flag("--regular", f->regular, "the regular path only (--paths regular)");

  auto* pmd = app.add_subcommand("pmd", "PMD resolve rate, registration churn, crash->leave");
  add_common(*pmd, f->pmd.common, f->timeout_s, true);
  pmd->add_option("--resolves", f->pmd.resolves, "pipelined resolves per rep")
      ->capture_default_str();
  pmd->add_option("--churn", f->pmd.churn, "register+unregister pairs per rep")
      ->capture_default_str();

  auto* call = app.add_subcommand("call", "call() round trips against raw TCP, calls/s in flight");
  add_common(*call, f->call.common, f->timeout_s, true);
  call->add_option("--msgs", f->call.msgs, "round trips per variant and rep (rate runs: 4x)")
      ->capture_default_str();
  call->add_option("--size", f->call.size, "payload bytes")->capture_default_str();
  call->add_option("--pin", f->call_pin, "CPU placement of the two processes")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "same", "different"}));
  call->add_option("--inflight", f->call.inflight, "calls waiting at once, one rate run each")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1u, 65536u));
  auto* cluster = app.add_subcommand("cluster",
                                     "PMDs sharing one etcd: join visibility, "
                                     "1000 nodes over 10 PMDs, local resolves");
  add_common(*cluster, f->cluster.common, f->timeout_s, false);
  cluster->add_option("--etcd", f->cluster.etcd, "use this etcd (default: start a private one)");
  cluster->add_option("--pmds", f->cluster.pmds)->capture_default_str()->check(CLI::Range(2u, 64u));
  cluster->add_option("--joins", f->cluster.joins, "one at a time, per rep")->capture_default_str();
  cluster->add_option("--nodes", f->cluster.nodes, "spread over the pmds, per rep")
      ->capture_default_str();
  cluster->add_option("--resolves", f->cluster.resolves, "pipelined, per pmd kind and rep")
      ->capture_default_str();

  auto* worker = app.add_subcommand("worker", "internal: a process the benches start");
  worker->group("");  // hidden
  auto& w = f->worker;
  worker->add_option("--role", w.role)->required();
  worker->add_option("--pmd-port", w.pmd_port);
  worker->add_option("--alias", w.alias);
  worker->add_option("--target", w.targets, "repeated: round-robin (tx)");
  worker->add_option("--msgs", w.msgs);
  worker->add_option("--size", w.size);
  worker->add_option("--id", w.id);
  worker->add_option("--port", w.port);
  worker->add_flag("--split", w.split);
  worker->add_flag("--auto-pmd", w.auto_pmd);
  worker->add_option("--inflight", w.inflight)->delimiter(',');
  worker->add_option("--pmd-host", w.pmd_host);
  worker->add_option("--listen", w.listen_host);
  worker->add_option("--cookie-file", w.cookie_file);
  worker->add_option("--tls-cert", w.tls.cert);
  worker->add_option("--tls-key", w.tls.key);
  worker->add_option("--tls-ca", w.tls.ca);
  worker->add_flag("--insecure", w.insecure);
  worker->add_option("--timeout", f->timeout_s);

  return [f, mailbox, throughput, latency, pmd, call, cluster, worker]() -> int {
    if (mailbox->parsed()) {
      f->mailbox.common = finish(f->mailbox.common, f->timeout_s);
      f->mailbox.policy = *parse_overflow_policy(f->policy);
      run_mailbox_bench(f->mailbox, std::cout, std::cerr);
    } else if (throughput->parsed()) {
      f->throughput.common = finish(f->throughput.common, f->timeout_s);
      run_throughput_bench(f->throughput, std::cout, std::cerr);
    } else if (latency->parsed()) {
      f->latency.common = finish(f->latency.common, f->timeout_s);
      f->latency.pin = *parse_pin_mode(f->pin);
      f->latency.paths = *parse_latency_paths(f->regular ? "regular" : f->paths);
      run_latency_bench(f->latency, std::cout, std::cerr);
    } else if (pmd->parsed()) {
      f->pmd.common = finish(f->pmd.common, f->timeout_s);
      run_pmd_bench(f->pmd, std::cout, std::cerr);
    } else if (call->parsed()) {
      f->call.common = finish(f->call.common, f->timeout_s);
      f->call.pin = *parse_pin_mode(f->call_pin);
      run_call_bench(f->call, std::cout, std::cerr);
    } else if (cluster->parsed()) {
      f->cluster.common = finish(f->cluster.common, f->timeout_s);
      run_cluster_bench(f->cluster, std::cout, std::cerr);
    } else if (worker->parsed()) {
      f->worker.timeout = std::chrono::seconds(f->timeout_s);
      if (!f->worker.targets.empty())
        f->worker.target = f->worker.targets.front();
      return run_bench_worker(f->worker, std::cout);
    }
    return 0;
  };
}

}  // namespace distflow::modes
