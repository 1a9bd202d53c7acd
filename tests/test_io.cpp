// safetensors: round trip of every dtype, metadata, and each corrupt-file case with its message.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/helpers.hpp"

using namespace octet;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("octet_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

// Writes a file with the given JSON header and `data_bytes` zero bytes after it.
std::string write_raw(const std::string& name, const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  const std::string p = temp_path(name);
  std::ofstream f(p, std::ios::binary);
  uint64_t len = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>(len >> (8 * i)));
  f << header;
  f << std::string(data_bytes, '\0');
  return p;
}

}  // namespace

TEST_CASE("safetensors round trip for every dtype") {
  TensorMap m;
  const DType all[] = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::u8, DType::i32, DType::i64, DType::f8_e4m3, DType::f8_e5m2};
  for (DType t : all) m[std::string(dtype_name(t))] = randn({3, 5}).to(t);
  m["empty"] = Tensor::empty({0, 4});
  m["scalar"] = Tensor::full({}, 2.5);
  const std::string p = temp_path("roundtrip.safetensors");
  save_safetensors(p, m, {{"octet.x", "{\"blocksize\": 64}"}, {"source", "test"}});
  TensorMap back = load_safetensors(p);
  REQUIRE(back.size() == m.size());
  for (const auto& [name, t] : m) {
    CAPTURE(name);
    CHECK(test::bitwise_equal(back.at(name), t));
  }
  auto meta = load_safetensors_metadata(p);
  CHECK(meta.at("source") == "test");
  CHECK(meta.at("octet.x") == "{\"blocksize\": 64}");
  std::filesystem::remove(p);
}

TEST_CASE("corrupt safetensors files are rejected with a message") {
  const std::string ok_entry = R"("a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  CHECK_THROWS_WITH_AS(load_safetensors(temp_path("missing.safetensors")), doctest::Contains("cannot be read"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("short", "", 0, 0).substr(0) + ""), doctest::Contains("header is not valid JSON"), Error);
  {
    const std::string p = temp_path("tiny");
    std::ofstream(p, std::ios::binary) << "abc";
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("truncated"), Error);
  }
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("trunc_header", "{" + ok_entry + "}", 8, 5000)), doctest::Contains("truncated: header length 5000"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("huge_header", "{}", 0, int64_t(1) << 40)), doctest::Contains("exceeds the limit"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("badjson", "{\"a\": [1, 2", 0)), doctest::Contains("not valid JSON"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("notobj", "[1, 2]", 0)), doctest::Contains("not a JSON object"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("range", "{" + ok_entry + "}", 4)), doctest::Contains("lie outside"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("size", R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8)),
                       doctest::Contains("needs 12"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("overlap", R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12)),
                       doctest::Contains("overlap"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("dup", "{" + ok_entry + ", " + ok_entry + "}", 8)), doctest::Contains("appears more than once"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("dtype", R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}})", 2)),
                       doctest::Contains("unsupported dtype 'Q4'"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("reversed", R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}})", 4)),
                       doctest::Contains("reversed"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("negshape", R"({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}})", 0)),
                       doctest::Contains("non-negative integer"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(write_raw("meta", R"({"__metadata__": {"a": 1}})", 0)), doctest::Contains("not a string"), Error);
}

OCTET_CUDA_TEST("safetensors load onto the GPU") {
  const std::string p = temp_path("gpu.safetensors");
  Tensor t = randn({17, 3});
  save_safetensors(p, {{"t", t.to(Device::cuda(0))}});
  TensorMap back = load_safetensors(p, Device::cuda(0));
  CHECK(back.at("t").device() == Device::cuda(0));
  CHECK(test::bitwise_equal(back.at("t"), t));
  std::filesystem::remove(p);
}
