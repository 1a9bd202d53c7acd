// safetensors: round trip of every dtype, the streaming writer, each corrupt-file case with its
// message (one CHECK per case; the fuzzer's regressions at the end), and bad writer arguments.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/fault_helpers.hpp"
#include "tests/helpers.hpp"

using namespace octet;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("octet_test_" + std::to_string(::getpid()) + "_" + name)).string();
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

// The message of the octet::Error that f throws ("(no error)" when it returns).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// load_safetensors on a file with this header; returns the message of the Error it must throw.
std::string load_error(const std::string& header, size_t data_bytes) {
  const std::string p = write_raw("case", header, data_bytes);
  const std::string msg = error_of([&] { load_safetensors(p); });
  fs::remove(p);
  return msg;
}

TensorMap every_dtype() {
  TensorMap m;
  const DType all[] = {DType::f32, DType::f64, DType::f16, DType::bf16, DType::u8, DType::i32, DType::i64, DType::f8_e4m3, DType::f8_e5m2};
  for (DType t : all) m[std::string(dtype_name(t))] = randn({3, 5}).to(t);
  m["empty"] = Tensor::empty({0, 4});
  m["scalar"] = Tensor::full({}, 2.5);
  m["odd"] = randn({7, 1, 3}, DType::f16);
  return m;
}

}  // namespace

TEST_CASE("safetensors round trip for every dtype") {
  manual_seed(7);
  const TensorMap m = every_dtype();
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
  // The data section starts 8-byte aligned and the index finds every tensor.
  const SafetensorsIndex index = read_safetensors_index(p);
  CHECK(index.data_start % 8 == 0);
  REQUIRE(index.find("f16") != nullptr);
  CHECK(index.find("nope") == nullptr);
  CHECK(test::bitwise_equal(read_safetensors_tensor(p, index, *index.find("f16")), m.at("f16")));
  CHECK(test::temporaries_of(p).empty());
  fs::remove(p);
}

TEST_CASE("SafetensorsWriter streams tensors and gives the same file as save_safetensors") {
  manual_seed(8);
  const TensorMap m = every_dtype();
  const std::string a = temp_path("writer_a.safetensors"), b = temp_path("writer_b.safetensors");
  save_safetensors(a, m, {{"k", "v"}});
  {
    SafetensorsWriter w(b);
    for (auto it = m.rbegin(); it != m.rend(); ++it) w.add(it->first, it->second);  // any order
    w.set_metadata("k", "v");
    CHECK(!fs::exists(b));
    w.close();
    CHECK_THROWS_WITH_AS(w.add("late", m.at("f32")), doctest::Contains("already closed"), Error);
    CHECK_THROWS_WITH_AS(w.close(), doctest::Contains("already closed"), Error);
  }
  CHECK(test::temporaries_of(b).empty());
  const TensorMap back = load_safetensors(b);
  REQUIRE(back.size() == m.size());
  for (const auto& [name, t] : m) {
    CAPTURE(name);
    CHECK(test::bitwise_equal(back.at(name), t));
  }
  CHECK(load_safetensors_metadata(b).at("k") == "v");
  fs::remove(a);
  fs::remove(b);
}

TEST_CASE("SafetensorsWriter without close leaves the target untouched and removes its temporaries") {
  const std::string p = temp_path("writer_abandon.safetensors");
  save_safetensors(p, {{"keep", Tensor::full({2}, 1.0)}});
  {
    SafetensorsWriter w(p);
    w.add("x", Tensor::full({3}, 2.0));
    CHECK(!test::temporaries_of(p).empty());
  }
  CHECK(test::temporaries_of(p).empty());
  CHECK(load_safetensors(p).count("keep") == 1);
  fs::remove(p);
}

TEST_CASE("bad writer arguments are rejected") {
  const std::string p = temp_path("bad_writer.safetensors");
  const Tensor x = Tensor::full({2}, 1.0);
  CHECK_THROWS_WITH_AS(save_safetensors(p, {{"", x}}), doctest::Contains("save_safetensors: argument 'name'"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors(p, {{"__metadata__", x}}), doctest::Contains("other than __metadata__"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors(p, {{"u", Tensor()}}), doctest::Contains("expected a defined tensor"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors(p, {{"bad\xff", x}}), doctest::Contains("valid UTF-8"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors(p, {{"a", x}}, {{"m", "\xc3"}}), doctest::Contains("valid UTF-8"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors("/nonexistent-dir/x.safetensors", {{"a", x}}), doctest::Contains("cannot create"), Error);
  CHECK(!fs::exists(p));
  CHECK(test::temporaries_of(p).empty());
  CHECK_THROWS_WITH_AS(SafetensorsWriter("/nonexistent-dir/x.safetensors"), doctest::Contains("cannot create"), Error);
  {
    SafetensorsWriter w(p);
    w.add("a", x);
    CHECK_THROWS_WITH_AS(w.add("a", x), doctest::Contains("a name not added before, got 'a'"), Error);
    CHECK_THROWS_WITH_AS(w.add("", x), doctest::Contains("argument 'name'"), Error);
    CHECK_THROWS_WITH_AS(w.add("u", Tensor()), doctest::Contains("expected a defined tensor"), Error);
    w.add("bad\xff", x);
    CHECK_THROWS_WITH_AS(w.close(), doctest::Contains("valid UTF-8"), Error);
  }
  CHECK(!fs::exists(p));
  CHECK_THROWS_WITH_AS(parse_safetensors_dtype("Q4"), doctest::Contains("parse_safetensors_dtype: argument 'dtype'"), Error);
}

TEST_CASE("corrupt safetensors files are rejected with a message") {
  const std::string ok_entry = R"("a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  CHECK(error_of([] { load_safetensors(temp_path("missing.safetensors")); }).rfind("load_safetensors: file '", 0) == 0);
  CHECK_THROWS_WITH_AS(load_safetensors(temp_path("missing.safetensors")), doctest::Contains("cannot be read"), Error);
  CHECK_THROWS_WITH_AS(load_safetensors(fs::temp_directory_path().string()), doctest::Contains("is a directory"), Error);
  {
    const std::string p = temp_path("tiny");
    std::ofstream(p, std::ios::binary) << "abc";
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("truncated: 3 bytes"), Error);
    fs::remove(p);
  }
  CHECK(load_error("", 0).find("header is not valid JSON") != std::string::npos);
  {
    const std::string p = write_raw("trunc_header", "{" + ok_entry + "}", 8, 5000);
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("truncated: header length 5000"), Error);
    fs::remove(p);
  }
  {
    const std::string p = write_raw("huge_header", "{}", 0, int64_t(1) << 40);
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("exceeds the limit"), Error);
    fs::remove(p);
  }
  CHECK(load_error("{\"a\": [1, 2", 0).find("not valid JSON") != std::string::npos);
  CHECK(load_error("[1, 2]", 0).find("not a JSON object") != std::string::npos);
  CHECK(load_error("{" + ok_entry + "}", 4).find("tensor 'a': data_offsets [0, 8] lie outside the 4 data bytes") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8).find("holds 8 bytes but shape (3,) of F32 needs 12") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12)
            .find("tensors 'a' and 'b' overlap") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}, "e": {"dtype": "U8", "shape": [0], "data_offsets": [4, 4]}})", 8)
            .find("overlap") != std::string::npos);
  CHECK(load_error("{" + ok_entry + ", " + ok_entry + "}", 8).find("key 'a' appears more than once") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "F32", "dtype": "U8", "shape": [8], "data_offsets": [0, 8]}})", 8).find("key 'dtype' appears more than once") != std::string::npos);
  CHECK(load_error(R"({"__metadata__": {"k": "1", "k": "2"}})", 0).find("key 'k' appears more than once") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}})", 2).find("tensor 'a': unsupported dtype 'Q4'") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": 4, "shape": [2], "data_offsets": [0, 2]}})", 2).find("missing dtype") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "data_offsets": [0, 2]}})", 2).find("missing shape") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}})", 4).find("reversed") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}})", 0).find("non-negative integer") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "shape": [2.0], "data_offsets": [0, 2]}})", 2).find("non-negative integer") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "shape": [65536, 65536, 65536, 2], "data_offsets": [0, 0]}})", 0).find("more than 2^48 elements") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "shape": [1000000000000000], "data_offsets": [0, 0]}})", 0).find("more than 2^48 elements") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2, 4]}})", 4).find("data_offsets must be two non-negative integers") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, "2"]}})", 4).find("data_offsets must be two") != std::string::npos);
  CHECK(load_error(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 18446744073709551616]}})", 4).find("data_offsets must be two") != std::string::npos);
  CHECK(load_error(R"({"a": [1]})", 0).find("tensor 'a': entry is not an object") != std::string::npos);
  CHECK(load_error(R"({"": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}})", 0).find("empty name") != std::string::npos);
  CHECK(load_error(R"({"__metadata__": {"a": 1}})", 0).find("'a' is not a string") != std::string::npos);
  CHECK(load_error(R"({"__metadata__": [1]})", 0).find("__metadata__ is not an object") != std::string::npos);
  std::string rank65 = R"({"a": {"dtype": "U8", "shape": [1)";
  for (int i = 1; i < 65; ++i) rank65 += ", 1";
  CHECK(load_error(rank65 + R"(], "data_offsets": [0, 1]}})", 1).find("65 dimensions (at most 64)") != std::string::npos);
  // Deep nesting (parsing and freeing must not recurse on the stack).
  CHECK(load_error(std::string(200000, '[') + std::string(200000, ']'), 0).find("not a JSON object") != std::string::npos);
  std::string deep = "{\"__metadata__\": ";
  for (int i = 0; i < 100000; ++i) deep += "{\"k\": ";
  CHECK(load_error(deep + "1" + std::string(100001, '}'), 0).find("__metadata__ entry 'k' is not a string") != std::string::npos);
  // Control bytes in names are escaped, long names cut.
  CHECK(load_error("{\"x\\u0001" + std::string(300, 'n') + "\": 1}", 0).find("tensor 'x\\x01nnn") != std::string::npos);
  CHECK(load_error("{\"" + std::string(300, 'n') + "\": 1}", 0).find("nnn...'") != std::string::npos);
}

TEST_CASE("a checkpoint truncated in its data, or changed after its index was read, is rejected") {
  const std::string p = temp_path("truncated.safetensors");
  save_safetensors(p, {{"a", Tensor::full({16}, 1.0)}, {"b", Tensor::full({16}, 2.0)}});
  const SafetensorsIndex index = read_safetensors_index(p);
  const uint64_t size = fs::file_size(p);
  fs::resize_file(p, size - 3);
  CHECK(error_of([&] { read_safetensors_tensor(p, index, *index.find("b")); }) ==
        "read_safetensors_tensor: file '" + p + "': tensor 'b': data_offsets [64, 128] lie outside the 125 data bytes");
  CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains("lie outside"), Error);
  // An index entry edited by the caller cannot make the reader overflow its buffer.
  SafetensorsEntry edited = *index.find("a");
  edited.shape = {2};
  CHECK_THROWS_WITH_AS(read_safetensors_tensor(p, index, edited), doctest::Contains("holds 64 bytes but shape (2,) of F32 needs 8"), Error);
  edited.shape = {-4};
  CHECK_THROWS_WITH_AS(read_safetensors_tensor(p, index, edited), doctest::Contains("non-negative"), Error);
  SafetensorsIndex moved = index;
  moved.data_start = size + 100;
  CHECK_THROWS_WITH_AS(read_safetensors_tensor(p, moved, *index.find("a")), doctest::Contains("data_start"), Error);
  fs::remove(p);
}

OCTET_CUDA_TEST("safetensors load onto the GPU") {
  manual_seed(9);
  const std::string p = temp_path("gpu.safetensors");
  Tensor t = randn({17, 3});
  save_safetensors(p, {{"t", t.to(Device::cuda(0))}});
  TensorMap back = load_safetensors(p, Device::cuda(0));
  CHECK(back.at("t").device() == Device::cuda(0));
  CHECK(test::bitwise_equal(back.at("t"), t));
  SafetensorsWriter w(p);
  w.add("g", t.to(Device::cuda(0)));
  w.close();
  CHECK(test::bitwise_equal(load_safetensors(p).at("g"), t));
  fs::remove(p);
}
