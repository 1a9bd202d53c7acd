// The octet program on checkpoints beyond the basic round trip (tests/test_cli.cpp): tensors larger
// than a streaming chunk, which tensors are converted by default (--min-size, --all), sharded
// checkpoint folders and their index, broken indexes, and the refusal to overwrite the input or
// an existing output.
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/cli_run.hpp"

using namespace octet;
using namespace octet::cli_test;
namespace fs = std::filesystem;

TEST_CASE("octet quantize/dequantize of tensors larger than a chunk equal the library on the whole tensor") {
  const std::string in = temp_path("big_in.safetensors"), q = temp_path("big_q.safetensors"),
                    out = temp_path("big_out.safetensors");
  for (const auto& p : {in, q, out}) fs::remove(p);
  manual_seed(21);
  // Over two chunks of 2^21 elements, with a partial last chunk and, at blocksize 4096, a partial block.
  const TensorMap m{{"wide", randn({2049, 2048 + 3}, DType::bf16)}, {"tall", randn({4099, 1025})}};
  save_safetensors(in, m);
  for (int64_t bs : {int64_t{4096}, int64_t{256}}) {
    CAPTURE(bs);
    const Run rq = octet_run("quantize " + in + " " + q + " --force --device cpu --blocksize " + std::to_string(bs));
    REQUIRE_MESSAGE(rq.code == 0, rq.out);
    const Run rd = octet_run("dequantize " + q + " " + out + " --force --device cpu");
    REQUIRE_MESSAGE(rd.code == 0, rd.out);
    const TensorMap stored = load_safetensors(q), back = load_safetensors(out);
    for (const auto& [name, t] : m) {
      CAPTURE(name);
      const Quantized want = quantize_blockwise(t, Code(), bs);
      CHECK(test::bitwise_equal(stored.at(name), want.codes));
      CHECK(test::bitwise_equal(stored.at(name + ".absmax"), want.state.absmax));
      CHECK(test::bitwise_equal(back.at(name), dequantize_blockwise(want.codes, want.state)));
    }
  }
  for (const auto& p : {in, q, out}) fs::remove(p);
}

TEST_CASE("octet quantize/dequantize never write over their input and replace an existing OUT only with --force") {
  const std::string dir = temp_path("same");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string in = dir + "/in.safetensors", q = dir + "/q.safetensors";
  save_safetensors(in, sample_checkpoint());
  fs::create_symlink("in.safetensors", dir + "/symlink.safetensors");
  fs::create_hard_link(in, dir + "/hardlink.safetensors");
  const auto size_before = fs::file_size(in);
  for (const std::string& out :
       {in, dir + "/./in.safetensors", dir + "/symlink.safetensors", dir + "/hardlink.safetensors"}) {
    for (const char* force : {"", " --force"}) {
      CAPTURE(out);
      const Run r = octet_run("quantize " + in + " " + out + force + " --device cpu");
      CHECK(r.code == 1);
      const std::string message = "OUT '" + out + "' is the input '" + in + "' (the same file)";
      CHECK_MESSAGE(r.out.find(message) != std::string::npos, r.out);
    }
  }
  CHECK(fs::file_size(in) == size_before);
  CHECK(load_safetensors_metadata(in).empty());  // still the floats
  REQUIRE(octet_run("quantize " + in + " " + q + " --device cpu").code == 0);
  const auto q_time = fs::last_write_time(q);
  const Run again = octet_run("quantize " + in + " " + q + " --blocksize 64 --device cpu");
  CHECK(again.code == 1);
  CHECK_MESSAGE(again.out.find("OUT '" + q + "' exists; pass --force to replace it") != std::string::npos, again.out);
  CHECK(fs::last_write_time(q) == q_time);
  CHECK(octet_run("quantize " + in + " " + q + " --blocksize 64 --force --device cpu").code == 0);
  CHECK(load_safetensors(q).at("layer.w.absmax").numel() == (37 * 129 + 63) / 64);
  // dequantize: the same rules.
  const Run self = octet_run("dequantize " + q + " " + q + " --device cpu");
  CHECK(self.code == 1);
  CHECK_MESSAGE(self.out.find("is the input") != std::string::npos, self.out);
  const Run existing = octet_run("dequantize " + q + " " + in + " --device cpu");
  CHECK(existing.code == 1);
  CHECK_MESSAGE(existing.out.find("OUT '" + in + "' exists; pass --force") != std::string::npos, existing.out);
  const Run folder = octet_run("quantize " + in + " " + dir + " --force --device cpu");
  CHECK(folder.code == 1);
  CHECK_MESSAGE(folder.out.find("OUT '" + dir + "' is a folder") != std::string::npos, folder.out);
  CHECK(octet_run("dequantize " + q + " " + dir + "/back.safetensors --device cpu").code == 0);
  fs::remove_all(dir);
}

TEST_CASE("octet quantize converts tensors of >= 2 dimensions and >= 4096 elements by default (--min-size, --all)") {
  const std::string in = temp_path("sel_in.safetensors"), q = temp_path("sel_q.safetensors");
  manual_seed(7);
  TensorMap m;
  m["matrix"] = randn({64, 64}, DType::bf16);       // 4096 elements: converted
  m["cube"] = randn({16, 16, 16});                  // 3 dimensions, 4096: converted
  m["narrow"] = randn({63, 64}, DType::f16);        // 4032 elements: copied
  m["bias"] = randn({8192});                        // 1 dimension: copied at any size
  m["scale"] = Tensor::full({}, 0.5);               // a scalar: copied
  m["empty"] = Tensor::empty({0, 4096}, DType::bf16);  // no elements: copied
  m["count"] = Tensor::full({64, 64}, 3.0, DType::i32);  // not floating point: copied
  save_safetensors(in, m);
  auto converted = [&](const std::string& flags) {
    fs::remove(q);
    const Run r = octet_run("quantize " + in + " " + q + " --device cpu " + flags);
    REQUIRE_MESSAGE(r.code == 0, r.out);
    std::set<std::string> names;
    const Metadata meta = load_safetensors_metadata(q);
    const TensorMap stored = load_safetensors(q);
    for (const auto& [name, t] : m) {
      CAPTURE(name);
      if (meta.count("octet." + name)) {
        names.insert(name);
      } else {
        CHECK(test::bitwise_equal(stored.at(name), t));  // copied byte for byte
        CHECK(stored.count(name + ".absmax") == 0);
      }
    }
    return std::make_pair(names, r.out);
  };
  const auto [by_default, out] = converted("");
  CHECK(by_default == std::set<std::string>{"matrix", "cube"});
  CHECK_MESSAGE(out.find("quantized 2 of 7 tensors") != std::string::npos, out);
  CHECK_MESSAGE(out.find("copied 5 unchanged (4 below 2 dimensions or 4096 elements, 1 not floating point)") !=
                    std::string::npos, out);
  CHECK(converted("--min-size 4032").first == std::set<std::string>{"matrix", "cube", "narrow"});
  CHECK(converted("--min-size 0").first == std::set<std::string>{"matrix", "cube", "narrow", "empty"});
  CHECK(converted("--min-size 5000").first.empty());
  CHECK(converted("--all").first == std::set<std::string>{"matrix", "cube", "narrow", "bias", "scale", "empty"});
  CHECK(converted("--all --skip '^(bias|cube)$'").first == std::set<std::string>{"matrix", "narrow", "scale", "empty"});
  for (const auto& p : {in, q}) fs::remove(p);
}

namespace {

// A Hugging Face style sharded checkpoint: two shards and model.safetensors.index.json.
std::map<std::string, TensorMap> write_sharded(const std::string& dir) {
  manual_seed(11);
  std::map<std::string, TensorMap> shards;
  shards["model-00001-of-00002.safetensors"] = {{"a.weight", randn({96, 64}, DType::bf16)},
                                                {"a.bias", randn({96}, DType::bf16)}};
  shards["model-00002-of-00002.safetensors"] = {{"b.weight", randn({64, 80})}, {"b.norm", randn({80})}};
  fs::create_directories(dir);
  nlohmann::json index = {{"metadata", {{"total_size", 0}, {"format", "pt"}}},
                          {"weight_map", nlohmann::json::object()}};
  for (const auto& [file, tensors] : shards) {
    save_safetensors(dir + "/" + file, tensors, {{"format", "pt"}});
    for (const auto& [name, t] : tensors) index["weight_map"][name] = file;
  }
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump(2);
  return shards;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

}  // namespace

TEST_CASE("octet quantize/dequantize convert a sharded checkpoint folder shard by shard and rewrite its index") {
  const std::string dir = temp_path("sharded"), qdir = temp_path("sharded_q"), back = temp_path("sharded_back");
  for (const auto& p : {dir, qdir, back}) fs::remove_all(p);
  const auto shards = write_sharded(dir);
  const Run rq = octet_run("quantize " + dir + " " + qdir + " --blocksize 128 --device cpu");
  REQUIRE_MESSAGE(rq.code == 0, rq.out);
  CHECK_MESSAGE(rq.out.find("(2 shards): quantized 2 of 4 tensors") != std::string::npos, rq.out);
  const nlohmann::json index = read_json(qdir + "/model.safetensors.index.json");
  CHECK(index.at("metadata").at("format") == "pt");  // the rest of the index is kept
  uint64_t total = 0;
  std::set<std::string> listed;
  for (const auto& [file, tensors] : shards) {
    CAPTURE(file);
    const SafetensorsIndex stored = read_safetensors_index(qdir + "/" + file);
    for (const auto& e : stored.entries) {
      CAPTURE(e.name);
      total += e.end - e.begin;
      listed.insert(e.name);
      CHECK(index.at("weight_map").at(e.name) == file);  // every stored tensor, in its own shard
    }
    CHECK(stored.metadata.at("format") == "pt");
    for (const auto& [name, t] : tensors) {
      const bool quantized = t.dim() >= 2;
      CHECK(stored.metadata.count("octet." + name) == size_t(quantized));
      if (quantized) CHECK(stored.find(name + ".absmax") != nullptr);
    }
  }
  CHECK(index.at("weight_map").size() == listed.size());
  CHECK(index.at("metadata").at("total_size").get<uint64_t>() == total);
  CHECK(listed.count("a.weight.absmax") == 1);
  CHECK(listed.count("b.weight.code") == 1);

  // Back through the index file; the restored index lists the original names again.
  const Run rd = octet_run("dequantize " + qdir + "/model.safetensors.index.json " + back + " --device cpu");
  REQUIRE_MESSAGE(rd.code == 0, rd.out);
  CHECK_MESSAGE(rd.out.find("(2 shards): restored 2 quantized tensors, copied 2") != std::string::npos, rd.out);
  const nlohmann::json restored = read_json(back + "/model.safetensors.index.json");
  CHECK(restored.at("weight_map") == read_json(dir + "/model.safetensors.index.json").at("weight_map"));
  for (const auto& [file, tensors] : shards) {
    const TensorMap got = load_safetensors(back + "/" + file);
    REQUIRE(got.size() == tensors.size());
    for (const auto& [name, t] : tensors) {
      CAPTURE(name);
      const Tensor want = t.dim() >= 2 ? library_roundtrip(t, Code(), 128, false) : t;
      CHECK(test::bitwise_equal(got.at(name), want));
    }
  }
  // The folder rules: never into the input folder, existing shards only with --force.
  const Run self = octet_run("quantize " + dir + " " + dir + " --device cpu");
  CHECK(self.code == 1);
  CHECK_MESSAGE(self.out.find("is the input folder") != std::string::npos, self.out);
  fs::create_directory_symlink(dir, temp_path("sharded_link"));
  const Run linked = octet_run("quantize " + dir + " " + temp_path("sharded_link") + " --force --device cpu");
  CHECK(linked.code == 1);
  CHECK_MESSAGE(linked.out.find("is the input folder") != std::string::npos, linked.out);
  fs::remove(temp_path("sharded_link"));
  const Run existing = octet_run("quantize " + dir + " " + qdir + " --device cpu");
  CHECK(existing.code == 1);
  CHECK_MESSAGE(existing.out.find("model-00001-of-00002.safetensors' exists; pass --force") != std::string::npos,
                existing.out);
  CHECK(octet_run("quantize " + dir + " " + qdir + " --force --all --device cpu").code == 0);
  CHECK(read_json(qdir + "/model.safetensors.index.json").at("weight_map").count("a.bias.absmax") == 1);
  for (const auto& p : {dir, qdir, back}) fs::remove_all(p);
}

TEST_CASE("octet quantize rejects broken sharded checkpoints with a message naming what it was given") {
  const std::string dir = temp_path("broken"), out = temp_path("broken_out");
  for (const auto& p : {dir, out}) fs::remove_all(p);
  fs::create_directories(dir);
  auto expect = [&](const std::string& message) {
    fs::remove_all(out);
    const Run r = octet_run("quantize " + dir + " " + out + " --device cpu");
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.out.find(message) != std::string::npos, r.out);
  };
  expect("IN '" + dir + "' is a folder without model.safetensors.index.json");
  write_sharded(dir);
  const std::string index_path = dir + "/model.safetensors.index.json";
  const nlohmann::json good = read_json(index_path);
  auto with_index = [&](const nlohmann::json& j) { std::ofstream(index_path) << j.dump(); };
  with_index(nlohmann::json{{"metadata", nlohmann::json::object()}});
  expect("has no \"weight_map\" object");
  std::ofstream(index_path) << "{not json";
  expect("is not valid JSON");
  nlohmann::json j = good;
  j["weight_map"]["a.bias"] = "../elsewhere.safetensors";
  with_index(j);
  expect("tensor 'a.bias' maps to '../elsewhere.safetensors'; shard files must be plain file names");
  j = good;
  j["weight_map"]["ghost"] = "model-00003-of-00003.safetensors";
  with_index(j);
  expect("lists shard 'model-00003-of-00003.safetensors', which is not in");
  j = good;
  j["weight_map"]["ghost"] = "model-00001-of-00002.safetensors";
  with_index(j);
  expect("lacks tensor 'ghost', which the index lists for it");
  j = good;
  j["weight_map"].erase("b.norm");
  with_index(j);
  expect("tensor 'b.norm' is not in the index's weight_map");
  j = good;
  j["weight_map"]["a.bias"] = "model-00002-of-00002.safetensors";
  with_index(j);
  expect("tensor 'a.bias' is listed in the index for 'model-00002-of-00002.safetensors'");
  with_index(good);
  fs::remove_all(out);
  std::ofstream(out) << "a file";
  const Run file_out = octet_run("quantize " + dir + " " + out + " --device cpu");
  CHECK(file_out.code == 1);
  CHECK_MESSAGE(file_out.out.find("is a file; a sharded checkpoint is written into a folder") != std::string::npos,
                file_out.out);
  for (const auto& p : {dir, out}) fs::remove_all(p);
}

// With a GPU, `octet bench quant` would run the GPU family: only the machines without one can
// check this quickly.
TEST_CASE("octet bench without a GPU names the GPU families it skips [no gpu]" * doctest::skip(test::has_gpu())) {
  const Run r = octet_run("bench quant clip --runs 1");
  CHECK(r.code == 0);
  CHECK_MESSAGE(r.out.find("no CUDA device; skipping the GPU families (quant, clip)") != std::string::npos, r.out);
}
