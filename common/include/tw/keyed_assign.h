// assignKeyed: refreshes a std::map from a sequence of values that carry
// their own key (an agent's assignments by vm, a host's domains by vm).
//
// The result is always that of
//     map.clear();
//     for (const V& v : values) map[key_of(v)] = v;
// but when `values` names exactly the map's keys in the map's order (the
// common case on every heartbeat: the same VMs as last time) the values are
// assigned in place: the map's nodes, and the buffers of their strings, are
// kept, so a refresh allocates nothing (issue #16: rebuilding these maps was
// a tenth of the 1,000-host simulated hour).
#pragma once

#include <map>
#include <utility>
#include <vector>

namespace tw {

namespace keyed_assign_detail {

template <typename K, typename V, typename C, typename A, typename KeyOf>
bool sameKeys(const std::map<K, V, C, A>& map, const std::vector<V>& values, KeyOf& key_of) {
  if (map.size() != values.size()) return false;
  auto it = map.begin();
  for (const V& v : values) {
    if (!(it->first == key_of(v))) return false;
    ++it;
  }
  return true;
}

}  // namespace keyed_assign_detail

// Copies `values` into `map`. Returns whether the keys were the same (the
// values were assigned in place).
template <typename K, typename V, typename C, typename A, typename KeyOf>
bool assignKeyed(std::map<K, V, C, A>& map, const std::vector<V>& values, KeyOf key_of) {
  if (keyed_assign_detail::sameKeys(map, values, key_of)) {
    auto it = map.begin();
    for (const V& v : values) (it++)->second = v;
    return true;
  }
  map.clear();
  for (const V& v : values) map[key_of(v)] = v;
  return false;
}

// The same, moving the values out of `values` (left valid, unspecified).
template <typename K, typename V, typename C, typename A, typename KeyOf>
bool assignKeyed(std::map<K, V, C, A>& map, std::vector<V>&& values, KeyOf key_of) {
  if (keyed_assign_detail::sameKeys(map, values, key_of)) {
    auto it = map.begin();
    for (V& v : values) (it++)->second = std::move(v);
    return true;
  }
  map.clear();
  for (V& v : values) {
    K key = key_of(v);
    map[std::move(key)] = std::move(v);
  }
  return false;
}

// Whether two maps have the same keys.
template <typename K, typename V1, typename V2, typename C, typename A1, typename A2>
bool sameKeys(const std::map<K, V1, C, A1>& a, const std::map<K, V2, C, A2>& b) {
  if (a.size() != b.size()) return false;
  auto j = b.begin();
  for (const auto& entry : a) {
    if (!(entry.first == j->first)) return false;
    ++j;
  }
  return true;
}

}  // namespace tw
