// busctl stats: the broker's metrics, as `$broker`.metrics returns them in Prometheus
// text format (the same text its HTTP /metrics serves), printed as a table or JSON.
#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "encoding.hpp"
#include "render.hpp"
#include "sagebus/client.hpp"
#include "sagebus/status.hpp"
#include "sagebus/wire/frame.hpp"
#include "session.hpp"

namespace busctl {
namespace {

struct Sample {
  std::string metric;
  std::vector<std::pair<std::string, std::string>> labels;
  std::string value;
};

[[noreturn]] void malformed(std::size_t line_number, std::string_view why) {
  throw sagebus::Error(sagebus::Status::internal,
                       "the broker's metrics text is malformed at line " +
                           std::to_string(line_number) + ": " + std::string(why));
}

// Parses the labels after '{' up to and including '}', from `pos`; leaves `pos` after '}'.
std::vector<std::pair<std::string, std::string>> parse_labels(std::string_view line,
                                                              std::size_t& pos,
                                                              std::size_t line_number) {
  std::vector<std::pair<std::string, std::string>> labels;
  while (pos < line.size() && line[pos] != '}') {
    const std::size_t eq = line.find('=', pos);
    if (eq == std::string_view::npos || eq + 1 >= line.size() || line[eq + 1] != '"')
      malformed(line_number, "expected name=\"value\" in the labels");
    std::string name(line.substr(pos, eq - pos));
    std::string value;
    pos = eq + 2;
    for (;; ++pos) {
      if (pos >= line.size()) malformed(line_number, "unterminated label value");
      const char c = line[pos];
      if (c == '"') break;
      if (c == '\\' && pos + 1 < line.size()) {
        const char next = line[++pos];
        value += next == 'n' ? '\n' : next;
        continue;
      }
      value += c;
    }
    ++pos;  // the closing quote
    if (pos < line.size() && line[pos] == ',') ++pos;
    labels.emplace_back(std::move(name), std::move(value));
  }
  if (pos >= line.size()) malformed(line_number, "expected '}' after the labels");
  ++pos;  // '}'
  return labels;
}

std::vector<Sample> parse_prometheus(std::string_view text) {
  std::vector<Sample> samples;
  std::size_t line_number = 0;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    Sample sample;
    std::size_t pos = line.find_first_of("{ ");
    if (pos == std::string_view::npos || pos == 0) malformed(line_number, "expected NAME VALUE");
    sample.metric = std::string(line.substr(0, pos));
    if (line[pos] == '{') {
      ++pos;
      sample.labels = parse_labels(line, pos, line_number);
    }
    while (pos < line.size() && line[pos] == ' ')
      ++pos;
    const std::size_t value_end = line.find(' ', pos);  // a timestamp may follow
    sample.value = std::string(line.substr(pos, value_end - pos));
    if (sample.value.empty()) malformed(line_number, "expected a value");
    samples.push_back(std::move(sample));
  }
  return samples;
}

std::string labels_text(const Sample& sample) {
  std::string out;
  for (const auto& [name, value] : sample.labels)
    out += (out.empty() ? "" : ",") + name + "=" + value;
  return out.empty() ? "-" : out;
}

// The value as a JSON number when it is a finite one written as JSON allows ("12",
// "0.0005", "1e-05"); otherwise ("+Inf", "NaN") as a JSON string.
std::string value_json(const std::string& value) {
  bool json_number = !value.empty();
  std::size_t i = 0;
  if (i < value.size() && value[i] == '-') ++i;
  const auto digits = [&] {
    const std::size_t start = i;
    while (i < value.size() && value[i] >= '0' && value[i] <= '9')
      ++i;
    return i > start;
  };
  const std::size_t int_start = i;
  json_number = json_number && digits();
  if (json_number && value[int_start] == '0' && i - int_start > 1) json_number = false;
  if (json_number && i < value.size() && value[i] == '.') {
    ++i;
    json_number = digits();
  }
  if (json_number && i < value.size() && (value[i] == 'e' || value[i] == 'E')) {
    ++i;
    if (i < value.size() && (value[i] == '+' || value[i] == '-')) ++i;
    json_number = digits();
  }
  json_number = json_number && i == value.size();
  return json_number ? value : json_quote(value);
}

std::string stats_table(const std::vector<Sample>& samples) {
  std::vector<Row> rows{{"METRIC", "LABELS", "VALUE"}};
  for (const Sample& s : samples)
    rows.push_back({s.metric, labels_text(s), s.value});
  return aligned(rows);
}

std::string stats_json(const std::vector<Sample>& samples) {
  std::string out = "[";
  for (const Sample& s : samples) {
    if (out.size() > 1) out += ',';
    out += "{\"metric\":" + json_quote(s.metric) + ",\"labels\":{";
    bool first = true;
    for (const auto& [name, value] : s.labels) {
      if (!first) out += ',';
      first = false;
      out +=
          json_quote(name) + ":" +
          (is_valid_utf8(value) ? json_quote(value) : json_quote("base64:" + base64_encode(value)));
    }
    out += "},\"value\":" + value_json(s.value) + "}";
  }
  return out + "]\n";
}

}  // namespace

void stats(const Options& options, const std::string& prefix, std::ostream& out) {
  Session session(options);
  sagebus::CallOptions call_options;
  call_options.timeout = session.left();
  const sagebus::Reply reply =
      session.client().call(sagebus::wire::kBrokerService, "metrics", "", call_options);
  std::vector<Sample> samples;
  for (Sample& s : parse_prometheus(reply.payload))
    if (s.metric.rfind(prefix, 0) == 0) samples.push_back(std::move(s));
  out << (options.json ? stats_json(samples) : stats_table(samples));
}

}  // namespace busctl
