// Test support: one small file per structural rule of the safetensors and GGUF formats, each
// breaking exactly that rule, with the fragment its error message must hold. The bad-input tests
// (test_readers.cpp) check every one; the fuzz seed maker writes them as seeds. Not part of the
// library.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "gguf_writer.hpp"

namespace awq_test {

/// A malformed (or, with an empty `fragment`, a valid edge-case) file.
struct MalformedFile {
  std::string name;      ///< short name, used as the file name of the seed
  std::string format;    ///< "safetensors" or "gguf"
  std::vector<std::uint8_t> bytes;
  std::string fragment;  ///< what the error message must contain; empty: the file is valid
};

/// A safetensors file: the 8-byte length of `header`, `header`, then `data` bytes.
inline std::vector<std::uint8_t> st_file(const std::string& header, std::size_t data, std::uint64_t claimed_length = ~0ull) {
  std::vector<std::uint8_t> b(8 + header.size() + data, 0x3C);
  const std::uint64_t n = claimed_length == ~0ull ? header.size() : claimed_length;
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

/// One GGUF tensor directory entry.
struct GgufTensorSpec {
  std::string name;
  std::vector<std::uint64_t> dims;
  std::uint32_t type;
  std::uint64_t offset;
};

/// A GGUF v3 file: the key/values written by `kv` (`n_kv` of them), the tensor directory, padding
/// to `align`, then `data` bytes. Counts can be overridden to lie.
inline std::vector<std::uint8_t> gguf_file(std::uint64_t n_kv, const std::function<void(GgufWriter&)>& kv,
                                           const std::vector<GgufTensorSpec>& tensors, std::size_t data, std::size_t align = 32,
                                           std::uint32_t version = 3, std::uint64_t n_tensors = ~0ull) {
  GgufWriter w;
  w.header(version, n_tensors == ~0ull ? tensors.size() : n_tensors, n_kv);
  if (kv) kv(w);
  for (const auto& t : tensors) w.tensor_info(t.name, t.dims, t.type, t.offset);
  w.align(align);
  w.b.insert(w.b.end(), data, 0x3C);
  return w.b;
}

inline void kv_u32(GgufWriter& w, const std::string& key, std::uint32_t v) {
  w.str(key);
  w.put<std::uint32_t>(4);
  w.put<std::uint32_t>(v);
}

inline void kv_str(GgufWriter& w, const std::string& key, const std::string& v) {
  w.str(key);
  w.put<std::uint32_t>(8);
  w.str(v);
}

/// Every file, in rule order.
inline std::vector<MalformedFile> malformed_files() {
  std::vector<MalformedFile> f;
  const auto st = [&](std::string name, std::vector<std::uint8_t> b, std::string fragment) {
    f.push_back({std::move(name), "safetensors", std::move(b), std::move(fragment)});
  };
  const auto t = [](const std::string& name, const std::string& dtype, const std::string& shape, std::uint64_t b, std::uint64_t e) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(b) + "," +
           std::to_string(e) + "]}";
  };
  // ---- safetensors: the header length and the header
  st("st_empty", {}, "no header length");
  st("st_seven_bytes", {1, 0, 0, 0, 0, 0, 0}, "no header length");
  st("st_header_beyond_file", st_file("{}", 0, 1000), "header length 1000 exceeds the file");
  st("st_header_over_limit", st_file("{}", 0, 200ull << 20), "exceeds the file");
  st("st_header_length_2_64", st_file("{}", 0, ~0ull - 1), "exceeds the file");
  st("st_header_empty", st_file("", 4), "it is empty");
  st("st_header_leading_space", st_file(" {}", 0), "begins with byte 0x20");
  st("st_header_array", st_file("[1,2]", 0), "not a JSON object");
  st("st_header_malformed_json", st_file("{\"a\":", 0), "malformed JSON header");
  st("st_header_bad_utf8", st_file("{\"\xff\":1}", 0), "malformed JSON header");
  st("st_header_trailing_garbage", st_file("{} x", 0), "malformed JSON header");
  st("st_header_nul", st_file(std::string("{}\0{\"x\":1}", 10), 0), "header has a NUL byte at offset 10");
  st("st_deep_nesting", st_file("{\"a\":{\"shape\":" + std::string(100000, '[') + std::string(100000, ']') + "}}", 0), "in its shape");
  // ---- tensor entries
  st("st_name_repeats", st_file("{" + t("w", "U8", "[1]", 0, 1) + "," + t("w", "U8", "[1]", 1, 2) + "}", 2), "tensor 'w' repeats");
  st("st_metadata_repeats", st_file(R"({"__metadata__":{},"__metadata__":{}})", 0), "__metadata__ repeats");
  st("st_metadata_key_repeats", st_file(R"({"__metadata__":{"a":"x","a":"y"}})", 0), "__metadata__ key 'a' repeats");
  st("st_metadata_number", st_file(R"({"__metadata__":{"format":1}})", 0), "only string values");
  st("st_metadata_nested", st_file(R"({"__metadata__":{"a":{"b":"c"}}})", 0), "only string values");
  st("st_metadata_not_object", st_file(R"({"__metadata__":"pt"})", 0), "__metadata__ is a string, not an object");
  st("st_tensor_not_object", st_file(R"({"w":3})", 0), "tensor 'w' is the number 3, not an object");
  st("st_tensor_lacks_dtype", st_file(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", 1), "tensor 'w' lacks dtype");
  st("st_tensor_lacks_offsets", st_file(R"({"w":{"dtype":"U8","shape":[1]}})", 1), "tensor 'w' lacks data_offsets");
  st("st_tensor_unknown_field", st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}})", 1), "unknown field 'x'");
  st("st_tensor_field_twice", st_file(R"({"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1), "field 'dtype' twice");
  st("st_dtype_number", st_file(R"({"w":{"dtype":1,"shape":[1],"data_offsets":[0,1]}})", 1), "has the number 1 as its dtype");
  st("st_dtype_unknown", st_file("{" + t("w", "F8", "[2]", 0, 2) + "}", 2), "unknown dtype 'F8'");
  st("st_shape_not_array", st_file(R"({"w":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})", 1), "has the number 1 as its shape");
  st("st_shape_negative", st_file("{" + t("w", "U8", "[-1]", 0, 1) + "}", 1), "the negative number -1 in its shape");
  st("st_shape_float", st_file("{" + t("w", "U8", "[2.5]", 0, 1) + "}", 1), "non-integer number 2.5 in its shape");
  st("st_shape_string", st_file("{" + t("w", "U8", "[\"1\"]", 0, 1) + "}", 1), "a string in its shape");
  st("st_shape_beyond_2_64", st_file("{" + t("w", "U8", "[18446744073709551616]", 0, 1) + "}", 1), "in its shape");
  st("st_shape_overflow", st_file("{" + t("w", "F32", "[1099511627776,1099511627776,0]", 0, 0) + "}", 0), "is too large");
  st("st_sub_byte_partial", st_file("{" + t("w", "F4", "[3]", 0, 2) + "}", 2), "not a whole number of bytes");
  st("st_offsets_three", st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", 1), "more than 2 data_offsets");
  st("st_offsets_one", st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[1]}})", 1), "has 1 data_offsets, not 2");
  st("st_offsets_negative", st_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1), "negative number -1 in its data_offsets");
  st("st_offsets_reversed", st_file("{" + t("w", "U8", "[0]", 4, 0) + "}", 4), "end before they begin");
  st("st_range_vs_shape", st_file("{" + t("w", "F32", "[3]", 0, 8) + "}", 8), "byte range does not match its dtype and shape: [0, 8) holds 8 bytes, F32 x 3 needs 12");
  st("st_range_beyond_file", st_file("{" + t("w", "F32", "[4]", 0, 16) + "}", 8), "truncated");
  st("st_range_2_64", st_file("{" + t("w", "U8", "[1]", 18446744073709551615ull, 0) + "}", 1), "end before they begin");
  // ---- the data section: contiguous, from 0, complete
  st("st_overlap", st_file("{" + t("a", "F32", "[2]", 0, 8) + "," + t("b", "F32", "[2]", 4, 12) + "}", 12), "overlaps tensor 'a'");
  st("st_same_range", st_file("{" + t("a", "F32", "[2]", 0, 8) + "," + t("b", "F32", "[2]", 0, 8) + "}", 8), "overlaps tensor");
  st("st_hole", st_file("{" + t("a", "F32", "[1]", 0, 4) + "," + t("b", "F32", "[1]", 8, 12) + "}", 12), "hole at bytes [4, 8)");
  st("st_not_from_zero", st_file("{" + t("a", "F32", "[1]", 4, 8) + "}", 8), "hole at bytes [0, 4)");
  st("st_trailing_bytes", st_file("{" + t("a", "F32", "[1]", 0, 4) + "}", 8), "4 bytes after the last tensor");
  st("st_data_without_tensors", st_file("{}", 3), "3 bytes after the last tensor");
  // ---- valid edge cases
  st("st_ok_empty_tensors", st_file("{" + t("a", "U8", "[0]", 0, 0) + "," + t("b", "F32", "[2,0]", 0, 0) + "," + t("c", "U8", "[1]", 0, 1) + "}", 1), "");
  st("st_ok_padded_header", st_file("{" + t("a", "F4", "[4]", 0, 2) + ",\"__metadata__\":{\"format\":\"pt\"}}    ", 2), "");
  st("st_ok_scalar", st_file("{" + t("a", "C64", "[]", 0, 8) + "}", 8), "");

  // ---- GGUF: header
  const auto gg = [&](std::string name, std::vector<std::uint8_t> b, std::string fragment) {
    f.push_back({std::move(name), "gguf", std::move(b), std::move(fragment)});
  };
  const std::vector<GgufTensorSpec> one{{"w", {32}, 0, 0}};  // F32, 128 bytes
  gg("gguf_short", {'G', 'G', 'U'}, "is truncated: magic");
  gg("gguf_bad_magic", {'G', 'G', 'U', 'X', 3, 0, 0, 0}, "is not a GGUF file");
  gg("gguf_version_1", gguf_file(0, nullptr, {}, 0, 32, 1), "GGUF version 1");
  gg("gguf_version_7", gguf_file(0, nullptr, {}, 0, 32, 7), "unsupported GGUF version 7");
  gg("gguf_big_endian", gguf_file(0, nullptr, {}, 0, 32, 3u << 24), "big-endian");
  gg("gguf_tensor_count_2_63", gguf_file(0, nullptr, {}, 0, 32, 3, 1ull << 63), "tensor count 9223372036854775808 cannot fit");
  gg("gguf_tensor_count_beyond_file", gguf_file(0, nullptr, one, 128, 32, 3, 1000), "tensor count 1000 cannot fit");
  gg("gguf_kv_count_2_64", gguf_file(~0ull, nullptr, {}, 0), "metadata count 18446744073709551615 cannot fit");
  gg("gguf_kv_count_beyond_file", gguf_file(50, [](GgufWriter& w) { kv_u32(w, "a", 1); }, {}, 0), "metadata count 50 cannot fit");
  // ---- key/values
  gg("gguf_key_length_2_60", gguf_file(1, [](GgufWriter& w) { w.put<std::uint64_t>(1ull << 60); w.put<std::uint32_t>(4); w.put<std::uint32_t>(1); }, {}, 0),
     "metadata key length 1152921504606846976 at offset 24 exceeds 1 MiB");
  gg("gguf_key_length_70000", gguf_file(1, [](GgufWriter& w) { w.put<std::uint64_t>(70000); w.put<std::uint32_t>(4); w.put<std::uint32_t>(1); }, {}, 0),
     "metadata key length 70000 at offset 24 exceeds 65535 bytes");
  gg("gguf_key_beyond_file", gguf_file(1, [](GgufWriter& w) { w.put<std::uint64_t>(60000); w.put<std::uint32_t>(4); w.put<std::uint32_t>(1); }, {}, 0),
     "is truncated: metadata key needs 60000 bytes");
  gg("gguf_key_empty", gguf_file(1, [](GgufWriter& w) { kv_u32(w, "", 1); }, {}, 0), "is empty");
  gg("gguf_key_not_ascii", gguf_file(1, [](GgufWriter& w) { kv_u32(w, "caf\xc3\xa9", 1); }, {}, 0), "has byte 0xc3");
  gg("gguf_key_repeats", gguf_file(2, [](GgufWriter& w) { kv_u32(w, "a.b", 1); kv_u32(w, "a.b", 2); }, {}, 0), "metadata key 'a.b' repeats");
  gg("gguf_value_type_99", gguf_file(1, [](GgufWriter& w) { w.str("k"); w.put<std::uint32_t>(99); w.put<std::uint32_t>(0); }, {}, 0),
     "metadata 'k' has unknown value type 99");
  gg("gguf_bool_2", gguf_file(1, [](GgufWriter& w) { w.str("k"); w.put<std::uint32_t>(7); w.put<std::uint8_t>(2); }, {}, 0),
     "metadata 'k' has bool value 2");
  gg("gguf_string_beyond_file", gguf_file(1, [](GgufWriter& w) { w.str("k"); w.put<std::uint32_t>(8); w.put<std::uint64_t>(1000); }, {}, 0),
     "is truncated: string value needs 1000 bytes");
  gg("gguf_string_over_limit", gguf_file(1, [](GgufWriter& w) { w.str("k"); w.put<std::uint32_t>(8); w.put<std::uint64_t>(1ull << 40); }, {}, 0),
     "string value length 1099511627776");
  const auto array = [](std::uint32_t type, std::uint64_t n) {
    return [type, n](GgufWriter& w) { w.str("k"); w.put<std::uint32_t>(9); w.put<std::uint32_t>(type); w.put<std::uint64_t>(n); };
  };
  gg("gguf_array_nested", gguf_file(1, array(9, 1), {}, 0), "metadata 'k' is a nested array");
  gg("gguf_array_type_13", gguf_file(1, array(13, 1), {}, 0), "array of unknown value type 13");
  gg("gguf_array_length_2_40", gguf_file(1, array(0, 1ull << 40), {}, 0), "array length 1099511627776 cannot fit");
  gg("gguf_array_strings_beyond_file", gguf_file(1, array(8, 100), {}, 400), "array length 100 cannot fit");
  gg("gguf_array_bool_3", gguf_file(1, [](GgufWriter& w) { w.str("k"); w.put<std::uint32_t>(9); w.put<std::uint32_t>(7); w.put<std::uint64_t>(2); w.put<std::uint8_t>(1); w.put<std::uint8_t>(3); }, {}, 0),
     "has bool value 3");
  gg("gguf_alignment_i32", gguf_file(1, [](GgufWriter& w) { w.str("general.alignment"); w.put<std::uint32_t>(5); w.put<std::int32_t>(32); }, {}, 0),
     "general.alignment has value type i32, the format requires u32");
  gg("gguf_alignment_0", gguf_file(1, [](GgufWriter& w) { kv_u32(w, "general.alignment", 0); }, {}, 0), "general.alignment 0 is not a power of two");
  gg("gguf_alignment_48", gguf_file(1, [](GgufWriter& w) { kv_u32(w, "general.alignment", 48); }, one, 128, 48), "general.alignment 48 is not a power of two");
  // ---- tensor infos
  gg("gguf_tensor_name_65", gguf_file(0, nullptr, {{std::string(65, 'n'), {32}, 0, 0}}, 128), "tensor name length 65");
  gg("gguf_tensor_repeats", gguf_file(0, nullptr, {{"w", {32}, 0, 0}, {"w", {32}, 0, 128}}, 256), "tensor 'w' repeats");
  gg("gguf_tensor_dims_0", gguf_file(0, nullptr, {{"w", {}, 0, 0}}, 128), "tensor 'w' has 0 dimensions");
  gg("gguf_tensor_dims_5", gguf_file(0, nullptr, {{"w", {1, 1, 1, 1, 1}, 0, 0}}, 32), "tensor 'w' has 5 dimensions");
  gg("gguf_tensor_extent_0", gguf_file(0, nullptr, {{"w", {32, 0}, 0, 0}}, 0), "has extent 0 in dim 1");
  gg("gguf_tensor_extent_negative", gguf_file(0, nullptr, {{"w", {~0ull}, 0, 0}}, 0), "has a negative extent -1");
  gg("gguf_tensor_elements_overflow", gguf_file(0, nullptr, {{"w", {1ull << 32, 1ull << 32}, 0, 0}}, 0), "more than 2^63 elements");
  gg("gguf_tensor_bytes_overflow", gguf_file(0, nullptr, {{"w", {1ull << 62}, 0, 0}}, 0), "byte size overflows");
  gg("gguf_tensor_type_99", gguf_file(0, nullptr, {{"w", {32}, 99, 0}}, 128), "tensor 'w' has unknown ggml type 99");
  gg("gguf_tensor_type_removed", gguf_file(0, nullptr, {{"w", {32}, 31, 0}}, 128), "has ggml type Q4_0_4_4 (31), whose layout");
  gg("gguf_tensor_row_not_blocks", gguf_file(0, nullptr, {{"w", {33}, 2, 0}}, 128), "row of 33 is not a multiple of its block size 32 (Q4_0)");
  gg("gguf_tensor_offset_unaligned", gguf_file(0, nullptr, {{"w", {32}, 0, 4}}, 160), "offset 4 is not aligned to 32");
  // ---- the data section
  gg("gguf_no_data_section", gguf_file(0, nullptr, one, 0, 1), "is truncated before its data section");
  gg("gguf_tensor_beyond_file", gguf_file(0, nullptr, one, 100), "is truncated: tensor 'w' needs bytes [0, 128) of a data section of 100");
  gg("gguf_tensor_offset_2_64", gguf_file(0, nullptr, {{"w", {32}, 0, ~0ull - 31}}, 128), "is truncated: tensor 'w'");
  gg("gguf_tensor_overlap", gguf_file(0, nullptr, {{"a", {64}, 0, 0}, {"b", {32}, 0, 128}}, 256), "overlaps tensor 'a'");
  gg("gguf_tensor_same_offset", gguf_file(0, nullptr, {{"a", {32}, 0, 0}, {"b", {32}, 0, 0}}, 128), "overlaps tensor");
  gg("gguf_tensor_hole", gguf_file(0, nullptr, {{"a", {32}, 0, 0}, {"b", {32}, 0, 256}}, 384), "hole of 128 bytes before tensor 'b'");
  gg("gguf_tensor_not_from_zero", gguf_file(0, nullptr, {{"a", {32}, 0, 128}}, 256), "hole of 128 bytes before tensor 'a'");
  gg("gguf_trailing_bytes", gguf_file(0, nullptr, one, 256), "has 128 bytes after the last tensor's data");
  // ---- valid edge cases
  gg("gguf_ok_no_tensors_no_padding", gguf_file(1, [](GgufWriter& w) { kv_str(w, "general.architecture", "llama"); }, {}, 0, 1), "");
  gg("gguf_ok_alignment_64_padded", gguf_file(1, [](GgufWriter& w) { kv_u32(w, "general.alignment", 64); },
                                              {{"b", {8}, 1, 64}, {"a", {16}, 0, 0}}, 80, 64), "");
  gg("gguf_ok_out_of_order", gguf_file(0, nullptr, {{"b", {32}, 8, 32}, {"a", {4}, 0, 0}}, 66), "");
  return f;
}

}  // namespace awq_test
