#include "stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace sagebus::bench {

std::int64_t percentile(std::vector<std::int64_t>& samples, double p) {
  if (samples.empty()) return 0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(samples.size()));
  const auto index = static_cast<std::size_t>(std::clamp(rank, 1.0, double(samples.size()))) - 1;
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(index),
                   samples.end());
  return samples[index];
}

namespace {

template <typename T, typename Get>
T median_of(const std::vector<Result>& runs, Get get) {
  std::vector<T> values;
  for (const auto& r : runs)
    values.push_back(get(r));
  std::sort(values.begin(), values.end());
  return values[(values.size() - 1) / 2];
}

}  // namespace

Result median(const std::vector<Result>& runs) {
  Result out = runs.front();
  out.ops_per_s = median_of<double>(runs, [](const Result& r) { return r.ops_per_s; });
  out.p50_us = median_of<double>(runs, [](const Result& r) { return r.p50_us; });
  out.p99_us = median_of<double>(runs, [](const Result& r) { return r.p99_us; });
  out.delivered = median_of<std::uint64_t>(runs, [](const Result& r) { return r.delivered; });
  out.lost = median_of<std::uint64_t>(runs, [](const Result& r) { return r.lost; });
  if (out.server_dropped)
    out.server_dropped = median_of<std::uint64_t>(
        runs, [](const Result& r) { return r.server_dropped.value_or(0); });
  // The worst round too, so that one bad round is not hidden by a median.
  for (const auto& r : runs) {
    out.lost_max = std::max(out.lost_max, r.lost);
    out.errors = std::max(out.errors, r.errors);
  }
  if (out.store && out.store->exported) {
    out.store->commits_per_s = median_of<double>(
        runs, [](const Result& r) { return r.store ? r.store->commits_per_s : 0; });
    out.store->writes_per_commit = median_of<double>(
        runs, [](const Result& r) { return r.store ? r.store->writes_per_commit : 0; });
  }
  if (out.shape == Shape::restart) {
    out.recovered = median_of<std::uint64_t>(runs, [](const Result& r) { return r.recovered; });
    out.recovery_s = median_of<double>(runs, [](const Result& r) { return r.recovery_s; });
    out.rss_full_kib =
        median_of<std::uint64_t>(runs, [](const Result& r) { return r.rss_full_kib.value_or(0); });
    out.rss_recovered_kib = median_of<std::uint64_t>(
        runs, [](const Result& r) { return r.rss_recovered_kib.value_or(0); });
  }
  if (out.shape == Shape::stream) {
    out.mb_per_s = median_of<double>(runs, [](const Result& r) { return r.mb_per_s; });
    out.streams = median_of<std::uint64_t>(runs, [](const Result& r) { return r.streams; });
  }
  if (out.shape == Shape::cancel)
    out.samples = median_of<std::uint64_t>(runs, [](const Result& r) { return r.samples; });
  if (out.rss_idle_kib) {
    out.rss_idle_kib =
        median_of<std::uint64_t>(runs, [](const Result& r) { return r.rss_idle_kib.value_or(0); });
    out.rss_10k_kib =
        median_of<std::uint64_t>(runs, [](const Result& r) { return r.rss_10k_kib.value_or(0); });
  }
  return out;
}

std::string format(const Result& r, std::optional<double> ratio) {
  char buffer[512];
  int n = 0;
  if (r.shape == Shape::reqrep) {
    n = std::snprintf(buffer, sizeof buffer, "scenario=%s ops_per_s=%.0f p50_us=%.0f p99_us=%.0f",
                      r.scenario.c_str(), r.ops_per_s, r.p50_us, r.p99_us);
  } else if (r.shape == Shape::restart) {
    n = std::snprintf(buffer, sizeof buffer,
                      "scenario=%s items=%llu fill_puts_per_s=%.0f recovery_s=%.3f recovered=%llu",
                      r.scenario.c_str(), static_cast<unsigned long long>(r.items), r.ops_per_s,
                      r.recovery_s, static_cast<unsigned long long>(r.recovered));
  } else if (r.shape == Shape::stream) {
    n = std::snprintf(buffer, sizeof buffer,
                      "scenario=%s chunks_per_s=%.0f mb_per_s=%.1f streams=%llu "
                      "chunks_per_stream=%llu p50_us=%.0f p99_us=%.0f",
                      r.scenario.c_str(), r.ops_per_s, r.mb_per_s,
                      static_cast<unsigned long long>(r.streams),
                      static_cast<unsigned long long>(r.chunks_per_stream), r.p50_us, r.p99_us);
  } else if (r.shape == Shape::cancel) {
    n = std::snprintf(buffer, sizeof buffer, "scenario=%s p50_us=%.0f p99_us=%.0f samples=%llu",
                      r.scenario.c_str(), r.p50_us, r.p99_us,
                      static_cast<unsigned long long>(r.samples));
  } else {
    n = std::snprintf(buffer, sizeof buffer, "scenario=%s ops_per_s=%.0f delivered=%llu lost=%llu",
                      r.scenario.c_str(), r.ops_per_s, static_cast<unsigned long long>(r.delivered),
                      static_cast<unsigned long long>(r.lost));
  }
  std::string line(buffer, static_cast<std::size_t>(n));
  line += " system=" + r.system;
  if (r.server_dropped) line += " broker_dropped=" + std::to_string(*r.server_dropped);
  if (r.lost_max > r.lost) line += " lost_max=" + std::to_string(r.lost_max);
  if (r.errors) line += " errors=" + std::to_string(r.errors);
  if (r.rss_idle_kib) {
    line += " idle_clients=" + std::to_string(r.idle_clients);
    line += " rss_idle_kib=" + std::to_string(*r.rss_idle_kib);
    line += " rss_10k_kib=" + std::to_string(r.rss_10k_kib.value_or(0));
  }
  if (r.rss_full_kib) {
    line += " rss_full_kib=" + std::to_string(*r.rss_full_kib);
    line += " rss_recovered_kib=" + std::to_string(r.rss_recovered_kib.value_or(0));
  }
  if (r.store) {
    if (r.store->exported) {
      std::snprintf(buffer, sizeof buffer, " commits_per_s=%.0f writes_per_commit=%.1f",
                    r.store->commits_per_s, r.store->writes_per_commit);
      line += buffer;
    } else {
      line += " commits_per_s=n/a writes_per_commit=n/a";
    }
  }
  if (ratio) {
    std::snprintf(buffer, sizeof buffer, " ratio=%.2f", *ratio);
    line += buffer;
  }
  return line;
}

}  // namespace sagebus::bench
