// Byte-size parsing and formatting for configuration and tools.
#include "common/config.h"

#include <array>
#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace tensord {

absl::StatusOr<std::vector<int>> ParseDeviceList(absl::string_view text) {
  std::vector<int> out;
  if (absl::StripAsciiWhitespace(text) == "all") return out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int d = -1;
    if (!absl::SimpleAtoi(part, &d) || d < 0 || d > 63) {
      return absl::InvalidArgumentError(absl::StrCat("not a device ordinal: '", part, "'"));
    }
    for (int seen : out) {
      if (seen == d)
        return absl::InvalidArgumentError(absl::StrCat("device ", d, " is listed twice"));
    }
    out.push_back(d);
  }
  return out;
}

absl::StatusOr<uint64_t> ParseBytes(absl::string_view text) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  size_t digits = 0;
  while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) ++digits;
  uint64_t value = 0;
  if (digits == 0 || !absl::SimpleAtoi(s.substr(0, digits), &value)) {
    return absl::InvalidArgumentError(absl::StrCat("not a byte size: '", text, "'"));
  }
  std::string unit = absl::AsciiStrToLower(absl::StripAsciiWhitespace(s.substr(digits)));
  static constexpr std::array<std::pair<absl::string_view, int>, 5> kUnits = {
      {{"", 0}, {"k", 10}, {"m", 20}, {"g", 30}, {"t", 40}}};
  if (unit.size() >= 2 && unit.ends_with("ib"))
    unit.resize(unit.size() - 2);
  else if (unit.size() >= 2 && unit.ends_with("b"))
    unit.resize(unit.size() - 1);
  else if (unit == "b")
    unit.clear();
  for (const auto& [name, shift] : kUnits) {
    if (unit != name) continue;
    if (shift > 0 && value > (~uint64_t{0} >> shift)) {
      return absl::InvalidArgumentError(absl::StrCat("byte size overflows: '", text, "'"));
    }
    return value << shift;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown size unit in '", text, "'"));
}

std::string FormatBytes(uint64_t bytes) {
  static constexpr std::array<const char*, 5> kNames = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  size_t i = 0;
  while (v >= 1024.0 && i + 1 < kNames.size()) {
    v /= 1024.0;
    ++i;
  }
  return i == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.1f %s", v, kNames[i]);
}

}  // namespace tensord
