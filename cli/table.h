// Aligned text tables and the cell formatting twctl's table output uses.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tw/json.h"

namespace tw::cli {

// A table printed with columns sized to their content, three spaces apart,
// headers in capitals. Widths count bytes (no Unicode width). Empty cells show
// as "-" and newlines in cells as spaces, so every row is one line of
// whitespace-separated fields; lines carry no trailing spaces.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  // A row shorter than the header is padded with empty cells; a longer one is cut.
  void addRow(std::vector<std::string> cells);
  bool empty() const { return rows_.empty(); }
  size_t rows() const { return rows_.size(); }

  // The header line and one line per row, each ending in '\n'. An empty table
  // is its header line.
  std::string render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "2024-05-01T12:00:00.250Z" (UTC); "-" for t_ms <= 0 (never / unknown).
std::string formatTimeMs(int64_t t_ms);

// "850ms", "1.2s", "3m05s", "2h10m".
std::string formatDurationMs(int64_t ms);

// The text of one JSON value in a table cell: strings as they are, numbers and
// booleans as JSON writes them, arrays joined with ",", objects as compact JSON,
// null as "". A key ending in "_ms" holds a time: shown by formatTimeMs().
std::string cellText(const std::string& key, const Json& value);

// cellText() of object[key]; "" when the key is missing or object is not one.
std::string field(const Json& object, const std::string& key);

}  // namespace tw::cli
