// sage-bus-bench: measures sage-bus against the floor of a ZeroMQ broker and against
// NATS, on this machine, in the scenarios of scenarios.hpp. docs/benchmarks.md tells how to
// run it and how to read it. This file is the command line and the report; the scenarios
// are in scenarios.cpp, the systems in system_sagebus.cpp, baseline_zmq.cpp and
// baseline_nats.cpp.
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "child.hpp"
#include "idle_dealers.hpp"
#include "scenarios.hpp"
#include "stats.hpp"
#include "system.hpp"

namespace {

using namespace sagebus::bench;

struct Options {
  std::vector<std::string> scenarios;
  std::string baseline;
  bool compare = false;
  int rounds = 3;
  bool smoke = false;
  bool markdown = false;
  bool auth = false;           // every system secured (system.hpp)
  bool auth_vs_plain = false;  // sage-bus secured against sage-bus plain
  Counts counts;
  Paths paths;
  std::string forwarder_ports;
  std::string idle_child;
  std::string curve_dir;  // the forwarder's or idle child's keys (curve.hpp)
};

// The scenarios of --auth-vs-plain when none is named: small request-reply, where the cost
// of CURVE per message shows most.
const std::vector<std::string> kAuthVsPlainScenarios = {"reqrep_c1", "reqrep_c8", "pipelined"};

// A system's name in a run: secured ones say how ("sagebus+curve", "zmq+curve", "nats+tls").
std::string system_name(const std::string& base, bool secure) {
  if (!secure) return base;
  return base + (base == "nats" ? "+tls" : "+curve");
}

Factory factory_of(const std::string& system, const Paths& paths) {
  const bool secure = system.find('+') != std::string::npos;
  const std::string base = system.substr(0, system.find('+'));
  if (base == "sagebus")
    return [&paths, secure](const Setup& setup) { return start_sagebus(paths, secure, setup); };
  if (base == "zmq") return [&paths, secure](const Setup&) { return start_zmq(paths, secure); };
  return [&paths, secure](const Setup& setup) { return start_nats(paths, secure, setup); };
}

// How the durable table names a system: NATS there is JetStream ("jetstream",
// "jetstream+tls").
std::string durable_name(const std::string& system) {
  if (system.rfind("nats", 0) == 0) return "jetstream" + system.substr(4);
  return system;
}

// Why a smoke run's result is not clean, or empty when it is.
std::string smoke_failure(const Result& r, const Counts& counts) {
  if (r.errors) return std::to_string(r.errors) + " calls failed or came back wrong";
  if (r.shape == Shape::restart && r.lost)
    return std::to_string(r.lost) + " items put were not there after the restart";
  if (r.lost) return std::to_string(r.lost) + " messages lost";
  if (r.shape == Shape::pubsub && r.delivered == 0) return "nothing delivered";
  if (r.shape == Shape::reqrep && r.ops_per_s <= 0) return "no call answered";
  if (r.shape == Shape::stream && r.streams == 0) return "no stream completed";
  if (r.shape == Shape::cancel && r.samples == 0) return "no cancellation measured";
  (void)counts;
  return {};
}

// The ratio cells of one row: the first system's ops/s over each other's ("–" where
// either is missing), and the row's end.
void print_ratios(const std::map<std::string, Result>& row,
                  const std::vector<std::string>& systems) {
  const auto ours = row.find(systems[0]);
  for (std::size_t i = 1; i < systems.size(); ++i) {
    const auto base = row.find(systems[i]);
    if (ours == row.end() || base == row.end() || base->second.ops_per_s <= 0)
      std::printf(" – |");
    else
      std::printf(" %.2f |", ours->second.ops_per_s / base->second.ops_per_s);
  }
  std::printf("\n");
}

using Medians = std::map<std::string, std::map<std::string, Result>>;

// A figure of each system in a table: its heading (after the system's name) and its cell.
struct Column {
  const char* heading;
  std::function<std::string(const Result&)> cell;
};

std::string number(const char* format, double value) {
  char out[64];
  std::snprintf(out, sizeof out, format, value);
  return out;
}

// One row per scenario: for each system, the columns `columns_of` gives it, headed by
// `name` (the system's own unless given), "failed" and then "–" where it has no result;
// then its ratios (print_ratios), headed by `ratio_heading` (the i-th system's).
void print_table(
    const std::vector<std::string>& scenarios, const std::vector<std::string>& systems,
    Medians& medians, const std::function<std::vector<Column>(const std::string&)>& columns_of,
    const std::function<std::string(std::size_t)>& ratio_heading,
    const std::function<std::string(const std::string&)>& name = [](const std::string& system) {
      return system;
    }) {
  std::printf("\n| scenario |");
  std::size_t columns = 0;
  for (const auto& s : systems) {
    for (const Column& c : columns_of(s)) {
      std::printf(" %s %s |", name(s).c_str(), c.heading);
      ++columns;
    }
  }
  for (std::size_t i = 1; i < systems.size(); ++i, ++columns)
    std::printf(" %s |", ratio_heading(i).c_str());
  std::printf("\n|---|");
  for (std::size_t i = 0; i < columns; ++i)
    std::printf("---:|");
  std::printf("\n");
  for (const auto& scenario : scenarios) {
    std::printf("| %s |", scenario.c_str());
    for (const auto& s : systems) {
      const auto it = medians[scenario].find(s);
      const auto cells = columns_of(s);
      for (std::size_t c = 0; c < cells.size(); ++c) {
        if (it == medians[scenario].end())
          std::printf(" %s |", c == 0 ? "failed" : "–");
        else
          std::printf(" %s |", cells[c].cell(it->second).c_str());
      }
    }
    print_ratios(medians[scenario], systems);
  }
}

// The first of `systems` is "ours": the ratio columns are its ops/s over each other's,
// headed "ours/NAME" ("FIRST/NAME" when there are two systems).
std::function<std::string(std::size_t)> ours_over(const std::vector<std::string>& systems) {
  return [&systems](std::size_t i) {
    return (i == 1 && systems.size() == 2 ? systems[0] : std::string("ours")) + "/" + systems[i];
  };
}

// The request-reply and pub-sub scenarios (pub-sub: deliveries/s and what was lost).
void print_markdown_table(const std::vector<std::string>& scenarios,
                          const std::vector<std::string>& systems, Medians& medians) {
  const std::vector<Column> columns{
      {"ops/s", [](const Result& r) { return number("%.0f", r.ops_per_s); }},
      {"p50 µs",
       [](const Result& r) {
         return r.shape == Shape::reqrep ? number("%.0f", r.p50_us)
                                         : "lost " + std::to_string(r.lost);
       }},
      {"p99 µs", [](const Result& r) {
         return r.shape == Shape::reqrep ? number("%.0f", r.p99_us) : std::string("–");
       }}};
  print_table(
      scenarios, systems, medians, [&](const std::string&) { return columns; }, ours_over(systems));
}

// The durable_* scenarios on the systems that have a durable queue (NATS named
// "jetstream"), with the store's commits/s and writes per commit for those that report
// them ("n/a" where the server does not export its counters); ratios as above, headed
// "ours/jetstream".
void print_durable_table(const std::vector<std::string>& scenarios,
                         const std::vector<std::string>& systems, Medians& medians) {
  const auto exported = [](const Result& r) { return r.store && r.store->exported; };
  const std::vector<Column> calls{
      {"ops/s", [](const Result& r) { return number("%.0f", r.ops_per_s); }},
      {"p50 µs", [](const Result& r) { return number("%.0f", r.p50_us); }},
      {"p99 µs", [](const Result& r) { return number("%.0f", r.p99_us); }}};
  std::vector<Column> with_store = calls;
  with_store.push_back({"commits/s", [exported](const Result& r) {
                          return exported(r) ? number("%.0f", r.store->commits_per_s) : "n/a";
                        }});
  with_store.push_back({"writes/commit", [exported](const Result& r) {
                          return exported(r) ? number("%.1f", r.store->writes_per_commit) : "n/a";
                        }});
  print_table(
      scenarios, systems, medians,
      [&](const std::string& s) { return s.rfind("sagebus", 0) == 0 ? with_store : calls; },
      [&](std::size_t i) { return "ours/" + durable_name(systems[i]); }, durable_name);
}

// restart_1m, one row per system that ran it.
void print_restart_table(const std::vector<std::string>& systems, Medians& medians) {
  std::printf(
      "\n| scenario | system | items | fill puts/s | recovery s | RSS full KiB | RSS recovered "
      "KiB |\n|---|---|---:|---:|---:|---:|---:|\n");
  for (const auto& s : systems) {
    auto it = medians["restart_1m"].find(s);
    if (it == medians["restart_1m"].end()) {
      std::printf("| restart_1m | %s | failed | – | – | – | – |\n", s.c_str());
      continue;
    }
    const Result& r = it->second;
    std::printf("| restart_1m | %s | %llu | %.0f | %.3f | %llu | %llu |\n", s.c_str(),
                static_cast<unsigned long long>(r.items), r.ops_per_s, r.recovery_s,
                static_cast<unsigned long long>(r.rss_full_kib.value_or(0)),
                static_cast<unsigned long long>(r.rss_recovered_kib.value_or(0)));
  }
}

// The stream_* scenarios: chunks/s and MB/s of each system, and the latency of a whole
// stream; ratios of chunks/s as above.
void print_stream_table(const std::vector<std::string>& scenarios,
                        const std::vector<std::string>& systems, Medians& medians) {
  const std::vector<Column> columns{
      {"chunks/s", [](const Result& r) { return number("%.0f", r.ops_per_s); }},
      {"MB/s", [](const Result& r) { return number("%.1f", r.mb_per_s); }},
      {"stream p50 µs", [](const Result& r) { return number("%.0f", r.p50_us); }},
      {"stream p99 µs", [](const Result& r) { return number("%.0f", r.p99_us); }}};
  print_table(
      scenarios, systems, medians, [&](const std::string&) { return columns; }, ours_over(systems));
}

// cancel_latency, one row per system that ran it (sage-bus alone: no baseline has
// cancellation).
void print_cancel_table(const std::vector<std::string>& systems, Medians& medians) {
  std::printf(
      "\n| scenario | system | p50 µs | p99 µs | cancellations |\n|---|---|---:|---:|---:|\n");
  for (const auto& s : systems) {
    auto it = medians["cancel_latency"].find(s);
    if (it == medians["cancel_latency"].end()) {
      std::printf("| cancel_latency | %s | failed | – | – |\n", s.c_str());
      continue;
    }
    const Result& r = it->second;
    std::printf("| cancel_latency | %s | %.0f | %.0f | %llu |\n", s.c_str(), r.p50_us, r.p99_us,
                static_cast<unsigned long long>(r.samples));
  }
}

// One table per kind of scenario: the original ones (as before), the durable ones (on
// the systems that run them), restart_1m, the streams, cancel_latency.
void print_markdown(const std::vector<std::string>& scenarios,
                    const std::vector<std::string>& systems, Medians& medians) {
  std::vector<std::string> plain, durable, streams;
  bool restart = false, cancel = false;
  for (const auto& scenario : scenarios) {
    if (is_durable(scenario))
      durable.push_back(scenario);
    else if (is_stream(scenario))
      streams.push_back(scenario);
    else if (scenario == "restart_1m")
      restart = true;
    else if (scenario == "cancel_latency")
      cancel = true;
    else
      plain.push_back(scenario);
  }
  auto running = [&](std::string_view scenario) {
    std::vector<std::string> out;
    for (const auto& s : systems)
      if (runs_on(scenario, s)) out.push_back(s);
    return out;
  };
  if (!plain.empty()) print_markdown_table(plain, systems, medians);
  if (!durable.empty()) print_durable_table(durable, running(durable.front()), medians);
  if (restart) print_restart_table(running("restart_1m"), medians);
  if (!streams.empty()) print_stream_table(streams, running(streams.front()), medians);
  if (cancel) print_cancel_table(running("cancel_latency"), medians);
}

// Says on stderr which systems leave out which scenarios (runs_on), once for the run.
// Returns whether anything is left to run.
bool say_left_out(const std::vector<std::string>& scenarios,
                  const std::vector<std::string>& systems) {
  bool any = false;
  for (const auto& system : systems) {
    std::string left_out;
    for (const auto& scenario : scenarios) {
      if (runs_on(scenario, system))
        any = true;
      else
        left_out += (left_out.empty() ? "" : ", ") + scenario;
    }
    if (!left_out.empty())
      std::fprintf(stderr,
                   "sage-bus-bench: not run on %s: %s (durable_* run on sage-bus and NATS "
                   "JetStream only, the ZeroMQ forwarder has no durable queue; restart_1m on "
                   "sage-bus only; cancel_latency on sage-bus only, neither NATS nor the "
                   "forwarder has cancellation)\n",
                   system.c_str(), left_out.c_str());
  }
  return any;
}

int run(const Options& options) {
  // The first system is "ours": the others' ratio= is its ops/s over theirs.
  std::vector<std::string> systems;
  const bool secure = options.auth;
  if (options.auth_vs_plain) {
    systems = {system_name("sagebus", true), "sagebus"};  // ratio= auth/plain
  } else if (options.compare) {
    systems = {system_name("sagebus", secure), system_name("zmq", secure)};
    if (auto why = nats_unavailable(options.paths, secure); why.empty())
      systems.push_back(system_name("nats", secure));
    else
      std::fprintf(stderr, "sage-bus-bench: NATS is left out: %s\n", why.c_str());
  } else if (!options.baseline.empty()) {
    if (options.baseline == "nats") {
      if (auto why = nats_unavailable(options.paths, secure); !why.empty()) {
        std::fprintf(stderr, "sage-bus-bench: cannot measure NATS: %s\n", why.c_str());
        return EXIT_FAILURE;
      }
    }
    systems = {system_name(options.baseline, secure)};
  } else {
    systems = {system_name("sagebus", secure)};
  }
  const auto& scenarios = !options.scenarios.empty() ? options.scenarios
                          : options.auth_vs_plain    ? kAuthVsPlainScenarios
                                                     : scenario_names();
  const int rounds = options.compare && !options.smoke ? options.rounds : 1;
  if (!say_left_out(scenarios, systems)) {
    std::fprintf(stderr, "sage-bus-bench: none of these scenarios runs on these systems\n");
    return EXIT_FAILURE;
  }

  bool failed = false;
  std::map<std::string, std::map<std::string, std::vector<Result>>> runs;
  std::map<std::string, std::map<std::string, std::vector<std::string>>> failures;
  for (int round = 1; round <= rounds; ++round) {
    for (const auto& scenario : scenarios) {
      for (const auto& system : systems) {
        if (!runs_on(scenario, system)) continue;
        try {
          Result r = run_scenario(scenario, factory_of(system, options.paths), options.counts);
          if (rounds > 1 || options.compare)
            std::fprintf(stderr, "round=%d %s\n", round, format(r).c_str());
          else
            std::printf("%s\n", format(r).c_str());
          std::fflush(stdout);
          if (options.smoke) {
            if (auto why = smoke_failure(r, options.counts); !why.empty()) {
              std::fprintf(stderr, "sage-bus-bench: smoke: %s on %s: %s\n", scenario.c_str(),
                           system.c_str(), why.c_str());
              failed = true;
            }
          }
          if (r.errors) failed = true;
          runs[scenario][system].push_back(std::move(r));
        } catch (const std::exception& e) {
          std::fprintf(stderr, "sage-bus-bench: %s on %s failed: %s\n", scenario.c_str(),
                       system.c_str(), e.what());
          failures[scenario][system].push_back(e.what());
          failed = true;
        }
      }
    }
  }

  if (options.compare) {
    Medians medians;
    for (const auto& scenario : scenarios) {
      for (const auto& system : systems) {
        auto& list = runs[scenario][system];
        if (list.empty()) continue;
        medians[scenario][system] = median(list);
      }
      auto ours = medians[scenario].find(systems.front());
      for (const auto& system : systems) {
        if (!runs_on(scenario, system)) continue;
        const auto& failed_rounds = failures[scenario][system];
        auto it = medians[scenario].find(system);
        if (it == medians[scenario].end()) {
          std::printf("scenario=%s system=%s failed_rounds=%zu error=\"%s\"\n", scenario.c_str(),
                      system.c_str(), failed_rounds.size(),
                      failed_rounds.empty() ? "" : failed_rounds.front().c_str());
          continue;
        }
        if (!failed_rounds.empty()) {
          std::fprintf(stderr,
                       "sage-bus-bench: %s on %s: median of the %zu rounds that completed\n",
                       scenario.c_str(), system.c_str(), runs[scenario][system].size());
        }
        std::optional<double> ratio;
        if (system != systems.front() && ours != medians[scenario].end() &&
            it->second.ops_per_s > 0)
          ratio = ours->second.ops_per_s / it->second.ops_per_s;
        std::string line = format(it->second, ratio);
        if (!failed_rounds.empty())
          line += " failed_rounds=" + std::to_string(failed_rounds.size());
        std::printf("%s\n", line.c_str());
      }
    }
    if (options.markdown) print_markdown(scenarios, systems, medians);
  }
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  options.paths.busd = SAGEBUS_BENCH_BUSD;
  CLI::App app{
      "sage-bus-bench: measures sage-bus side by side with a raw ZeroMQ forwarder (the floor of "
      "any ZeroMQ broker) and NATS. It starts its own servers on free 127.0.0.1 ports and its "
      "own echo services, runs bounded scenarios and prints one line each:\n"
      "  scenario=<name> ops_per_s=<n> p50_us=<n> p99_us=<n> system=<s>     (request-reply)\n"
      "  scenario=<name> ops_per_s=<n> delivered=<n> lost=<n> system=<s>    (pub-sub)\n"
      "  scenario=restart_1m items=<n> fill_puts_per_s=<n> recovery_s=<s> ... system=sagebus\n"
      "  scenario=<name> chunks_per_s=<n> mb_per_s=<n> streams=<n> ... system=<s>   (stream_*)\n"
      "  scenario=cancel_latency p50_us=<n> p99_us=<n> samples=<n> system=sagebus\n"
      "Scenarios: " +
      [] {
        std::string all;
        for (const auto& n : scenario_names())
          all += (all.empty() ? "" : ", ") + n;
        for (const auto& n : named_only_scenario_names())
          all += ", " + n + " (only when named)";
        return all;
      }() +
      ". The durable_* ones compare sage-bus's durable legacy queues (sage-busd --store) with "
      "NATS JetStream, not the ZeroMQ forwarder; cancel_latency runs on sage-bus alone. See "
      "docs/benchmarks.md."};
  std::vector<std::string> every_scenario = scenario_names();
  for (const auto& n : named_only_scenario_names())
    every_scenario.push_back(n);
  app.add_option("--scenario", options.scenarios,
                 "Run this scenario; repeat, or separate with commas, for several (default: all "
                 "but restart_1m, which runs only when named)")
      ->delimiter(',')
      ->check(CLI::IsMember(every_scenario));
  app.add_option("--calls", options.counts.calls,
                 "Measured calls of reqrep_c1/reqrep_c8/lb_w4_c8/clients_10k; pipelined makes 5x, "
                 "reqrep_64k 1/10, reqrep_1m 1/100; stream_* at least 1/100 streams (and 1 s), "
                 "cancel_latency 1/20 cancellations")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000000}))
      ->capture_default_str();
  app.add_option("--messages", options.counts.messages, "Messages published by pubsub_*")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000000000}))
      ->capture_default_str();
  app.add_option("--idle-clients", options.counts.idle_clients,
                 "Idle connections held by clients_10k")
      ->check(CLI::Range(std::size_t{0}, std::size_t{100000}))
      ->capture_default_str();
  app.add_option("--items", options.counts.items,
                 "Measured items of each durable_* scenario (all producers together)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{10000000}))
      ->capture_default_str();
  app.add_option("--restart-items", options.counts.restart_items,
                 "Items restart_1m puts before it restarts the broker")
      ->check(CLI::Range(std::size_t{1}, std::size_t{10000000}))
      ->capture_default_str();
  app.add_option("--stream-window", options.counts.stream_window,
                 "The window of sage-bus's stream caller in stream_*, in bytes "
                 "(CallOptions::window_bytes: the bytes of chunks it may hold unread, each "
                 "counted as its size plus 64; the default is the SDK's; the baselines have no "
                 "flow control)")
      ->check(CLI::Range(1u, 64u * 1024 * 1024))
      ->capture_default_str();
  app.add_option("--baseline", options.baseline,
                 "Measure this baseline instead of sage-bus: zmq (a raw ROUTER forwarder and an "
                 "XSUB/XPUB proxy) or nats (nats-server via libnats)")
      ->check(CLI::IsMember({"zmq", "nats"}));
  app.add_flag("--compare", options.compare,
               "Run sage-bus and every available baseline, interleaved, for --rounds rounds; print "
               "the median of each figure and ratio=ours/baseline (ops/s). Each round's lines go "
               "to stderr. The durable_* scenarios run against NATS JetStream only (the ZeroMQ "
               "forwarder has no durable queue), restart_1m on sage-bus only");
  app.add_flag("--auth", options.auth,
               "Measure every system secured: sage-busd --auth (CURVE, a generated rules file "
               "allowing the bench everything) as system=sagebus+curve, the ZeroMQ forwarder with "
               "CURVE (zmq+curve), nats-server with TLS (nats+tls, a self-signed certificate made "
               "with openssl)");
  app.add_flag("--auth-vs-plain", options.auth_vs_plain,
               "Compare sage-bus with --auth against sage-bus plain, interleaved, for --rounds "
               "rounds (implies --compare); ratio= is auth/plain. Scenarios: reqrep_c1, "
               "reqrep_c8, pipelined unless --scenario is given")
      ->excludes("--baseline");
  app.add_option("--rounds", options.rounds, "Rounds of --compare")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_flag("--markdown", options.markdown, "With --compare: also print a Markdown table");
  app.add_flag("--smoke", options.smoke,
               "Tiny counts (seconds in all, one round): every scenario must complete with every "
               "call answered and nothing lost, else exit 1. For the test suite; no timing checks");
  app.add_option("--busd", options.paths.busd, "The sage-busd to measure")->capture_default_str();
  app.add_option("--endpoint", options.paths.endpoint,
                 "Measure the sage-busd already listening there instead of starting one, "
                 "calling the service bench-echo (method echo) that another program serves "
                 "on it; request-reply scenarios only, no baselines (python_bench.py uses it)")
      ->excludes("--compare")
      ->excludes("--baseline")
      ->excludes("--auth")
      ->excludes("--auth-vs-plain");
  app.add_option("--nats-server", options.paths.nats_server,
                 "The nats-server to measure (default: found in /usr/sbin, /usr/bin, /usr/local)");
  // Internal: this executable started again as the ZeroMQ forwarder.
  app.add_option("--zmq-forwarder", options.forwarder_ports, "ROUTER,XSUB,XPUB ports")->group("");
  app.add_option("--forwarder", options.paths.forwarder,
                 "Program to start as the ZeroMQ forwarder (default: this one), e.g. a wrapper "
                 "that profiles it");
  app.add_option("--idle-child", options.idle_child, "SYSTEM,ENDPOINT,FIRST,COUNT")->group("");
  // Internal: the keys of a secured forwarder or idle child (curve.hpp).
  app.add_option("--curve", options.curve_dir, "DIR")->group("");
  app.footer(
      "Environment: SAGEBUS_BENCH_KEEP_LOGS=1 keeps the servers' logs (their directory is named "
      "on stderr).");
  CLI11_PARSE(app, argc, argv);

  if (!options.idle_child.empty()) {
    const auto& spec = options.idle_child;
    const auto a = spec.find(','), c = spec.rfind(','), b = spec.rfind(',', c - 1);
    if (a == std::string::npos || b <= a || c <= b) {
      std::fprintf(stderr, "--idle-child: expected SYSTEM,ENDPOINT,FIRST,COUNT\n");
      return 2;
    }
    run_idle_child(spec.substr(0, a), spec.substr(a + 1, b - a - 1),
                   std::stoul(spec.substr(b + 1, c - b - 1)), std::stoul(spec.substr(c + 1)),
                   options.curve_dir);
  }

  if (!options.forwarder_ports.empty()) {
    int router = 0, xsub = 0, xpub = 0;
    if (std::sscanf(options.forwarder_ports.c_str(), "%d,%d,%d", &router, &xsub, &xpub) != 3) {
      std::fprintf(stderr, "--zmq-forwarder: expected ROUTER,XSUB,XPUB ports\n");
      return 2;
    }
    run_zmq_forwarder(router, xsub, xpub, options.curve_dir);
  }
  if (options.auth_vs_plain) options.compare = true;
  if (!options.paths.endpoint.empty() && options.scenarios.empty()) {
    std::fprintf(stderr, "--endpoint: name the scenarios (--scenario reqrep_c1 ...)\n");
    return 2;
  }
  if (!options.paths.endpoint.empty())
    for (const auto& scenario : options.scenarios)
      if (scenario != "reqrep_c1" && scenario != "reqrep_c8" && scenario != "pipelined") {
        std::fprintf(stderr,
                     "--endpoint: only reqrep_c1, reqrep_c8 and pipelined, not %s (the others "
                     "start services or watch the broker's process)\n",
                     scenario.c_str());
        return 2;
      }
  if (options.smoke) {
    options.counts.calls = std::min<std::size_t>(options.counts.calls, 500);
    options.counts.messages = std::min<std::size_t>(options.counts.messages, 2000);
    options.counts.idle_clients = std::min<std::size_t>(options.counts.idle_clients, 200);
    options.counts.items = std::min<std::size_t>(options.counts.items, 200);
    options.counts.restart_items = std::min<std::size_t>(options.counts.restart_items, 10000);
    options.counts.stream_seconds = 0;
  }
  try {
    options.paths.self = self_path();
    if (options.paths.forwarder.empty()) options.paths.forwarder = options.paths.self;
    install_signal_cleanup();
    return run(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sage-bus-bench: %s\n", e.what());
    return EXIT_FAILURE;
  }
}
