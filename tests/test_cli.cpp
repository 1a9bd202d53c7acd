// The octet program end to end ($OCTET_BIN, set by meson): quantize -> dequantize on a generated
// checkpoint compared bit for bit with the library's dequantize, the stored layout and metadata,
// info (with --check), every bad command line (exit 2 + usage) and bad file (exit 1), demo.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/helpers.hpp"

using namespace octet;
namespace fs = std::filesystem;

namespace {

struct Run {
  int code = -1;
  std::string out;  // stdout and stderr together
};

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("octet_cli_" + std::to_string(::getpid()) + "_" + name)).string();
}

Run octet_run(const std::string& args) {
  const char* bin = std::getenv("OCTET_BIN");
  REQUIRE_MESSAGE(bin != nullptr, "OCTET_BIN is not set (meson test sets it to the octet program)");
  Run r;
  FILE* f = ::popen((std::string(bin) + " " + args + " 2>&1 </dev/null").c_str(), "r");
  REQUIRE(f != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) r.out.append(buf, n);
  const int status = ::pclose(f);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// A checkpoint with odd sizes, partial blocks, an empty tensor and tensors that must be copied.
TensorMap sample_checkpoint() {
  manual_seed(1234);
  TensorMap m;
  m["layer.w"] = randn({37, 129});
  m["layer.b"] = randn({300}, DType::f16);
  m["emb"] = randn({3, 70}, DType::bf16);
  m["empty"] = Tensor::empty({0, 3}, DType::bf16);
  m["double"] = randn({50}, DType::f64);
  m["skip.w"] = randn({40});
  m["steps"] = Tensor::full({5}, 7.0, DType::i64);
  m["fp8"] = randn({9}).to(DType::f8_e4m3);
  return m;
}

bool quantizable(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64; }

// What the library gives for tensor a with these options (the reference for octet dequantize).
Tensor library_roundtrip(const Tensor& a, const Code& code, int64_t blocksize, bool nested) {
  const Tensor x = a.dtype() == DType::f64 ? a.to(DType::f32) : a;
  const Quantized q = blocksize ? quantize_blockwise(x, code, blocksize, nested) : quantize(x, code);
  const Tensor y = blocksize ? dequantize_blockwise(q.codes, q.state) : dequantize(q.codes, q.state);
  return a.dtype() == DType::f64 ? y.to(DType::f64) : y;
}

struct Case {
  std::string flags, code;
  int64_t blocksize;
  bool nested;
  Code table;
};

void check_roundtrip(const Case& c, const std::string& device_flag) {
  CAPTURE(c.flags);
  const TensorMap m = sample_checkpoint();
  const std::string in = temp_path("in.safetensors"), q = temp_path("q.safetensors"), out = temp_path("out.safetensors");
  save_safetensors(in, m, {{"source", "test"}});
  const Run rq = octet_run("quantize " + in + " " + q + " " + c.flags + " --skip '^skip\\.' " + device_flag);
  REQUIRE_MESSAGE(rq.code == 0, rq.out);
  CHECK(rq.out.find('\r') == std::string::npos);  // no progress bar when stderr is not a terminal
  CHECK(rq.out.find("quantized 5 of 8 tensors") != std::string::npos);

  // The stored layout: codes, absmax, code table (and the nested parts), metadata per tensor.
  const TensorMap stored = load_safetensors(q);
  const Metadata meta = load_safetensors_metadata(q);
  CHECK(meta.at("source") == "test");
  for (const auto& [name, t] : m) {
    CAPTURE(name);
    const bool quantized = quantizable(t.dtype()) && name != "skip.w";
    CHECK(meta.count("octet." + name) == size_t(quantized));
    if (!quantized) {
      CHECK(test::bitwise_equal(stored.at(name), t));
      continue;
    }
    const auto j = nlohmann::json::parse(meta.at("octet." + name));
    CHECK(j.at("blocksize").get<int64_t>() == c.blocksize);
    CHECK(j.at("dtype").get<std::string>() == safetensors_dtype_name(t.dtype()));
    CHECK(j.at("nested").get<bool>() == c.nested);
    CHECK(j.at("code").get<std::string>() == c.code);
    CHECK(stored.at(name).dtype() == DType::u8);
    CHECK(stored.at(name).shape() == t.shape());
    const int64_t blocks = c.blocksize ? (t.numel() + c.blocksize - 1) / c.blocksize : 1;
    CHECK(stored.at(name + ".absmax").numel() == blocks);
    CHECK(stored.at(name + ".absmax").dtype() == (c.nested ? DType::u8 : DType::f32));
    CHECK(test::bitwise_equal(stored.at(name + ".code"), c.table.table(Device::cpu())));
    CHECK(stored.count(name + ".absmax.offset") == size_t(c.nested));
    CHECK(stored.count(name + ".absmax.absmax") == size_t(c.nested));
    CHECK(stored.count(name + ".absmax.code") == size_t(c.nested));
  }

  const Run rd = octet_run("dequantize " + q + " " + out + " " + device_flag);
  REQUIRE_MESSAGE(rd.code == 0, rd.out);
  const TensorMap back = load_safetensors(out);
  REQUIRE(back.size() == m.size());
  for (const auto& [name, t] : m) {
    CAPTURE(name);
    const bool quantized = quantizable(t.dtype()) && name != "skip.w";
    const Tensor want = quantized ? library_roundtrip(t, c.table, c.blocksize, c.nested) : t;
    CHECK(back.at(name).dtype() == t.dtype());
    CHECK(test::bitwise_equal(back.at(name), want));
  }
  for (const auto& [key, value] : load_safetensors_metadata(out)) CHECK(key.rfind("octet.", 0) != 0);

  const Run ri = octet_run("info " + q + " --check " + in + " " + device_flag);
  REQUIRE_MESSAGE(ri.code == 0, ri.out);
  CHECK(ri.out.find("layer.w") != std::string::npos);
  CHECK(ri.out.find("u8<f32>") != std::string::npos);
  CHECK(ri.out.find("SNR dB") != std::string::npos);
  CHECK(ri.out.find(c.blocksize ? std::to_string(c.blocksize) : std::string("global")) != std::string::npos);
  CHECK(ri.out.find(" inf") != std::string::npos);  // copied tensors: no error
  CHECK(ri.out.find("layer.w.absmax") == std::string::npos);  // state rows folded into their tensor
  for (const auto& p : {in, q, out}) fs::remove(p);
}

const Case kCases[] = {
    {"--blocksize 64", "dynamic", 64, false, Code::dynamic()},
    {"--blocksize=32 --nested --code linear", "linear", 32, true, Code::linear()},
    {"--global --code fp8-e4m3", "fp8-e4m3", 0, false, Code::fp8_e4m3()},
    {"--code fp8-e5m2", "fp8-e5m2", 4096, false, Code::fp8_e5m2()},
};

}  // namespace

TEST_CASE("octet quantize then dequantize restores what the library's dequantize gives [cpu]") {
  for (const Case& c : kCases) check_roundtrip(c, "--device cpu");
}

OCTET_CUDA_TEST("octet quantize then dequantize on the GPU") {
  for (const Case& c : kCases) check_roundtrip(c, "--device cuda");
}

OCTET_CUDA_TEST("octet quantize writes the same file on the GPU as on the CPU") {
  save_safetensors(temp_path("in.safetensors"), sample_checkpoint());
  const std::string in = temp_path("in.safetensors"), a = temp_path("a.safetensors"), b = temp_path("b.safetensors");
  REQUIRE(octet_run("quantize " + in + " " + a + " --blocksize 128 --nested --device cpu").code == 0);
  REQUIRE(octet_run("quantize " + in + " " + b + " --blocksize 128 --nested --device cuda").code == 0);
  const TensorMap x = load_safetensors(a), y = load_safetensors(b);
  REQUIRE(x.size() == y.size());
  for (const auto& [name, t] : x) {
    CAPTURE(name);
    CHECK(test::bitwise_equal(y.at(name), t));
  }
  for (const auto& p : {in, a, b}) fs::remove(p);
}

TEST_CASE("octet info lists tensors, sizes and compression") {
  const std::string in = temp_path("info_in.safetensors"), q = temp_path("info_q.safetensors");
  save_safetensors(in, sample_checkpoint());
  REQUIRE(octet_run("quantize " + in + " " + q + " --blocksize 256 --device cpu").code == 0);
  const Run plain = octet_run("info " + in);
  REQUIRE_MESSAGE(plain.code == 0, plain.out);
  CHECK(plain.out.find("8 tensors, 0 quantized") != std::string::npos);
  CHECK(plain.out.find("(37, 129)") != std::string::npos);
  CHECK(plain.out.find(std::to_string(37 * 129 * 4)) != std::string::npos);
  const Run r = octet_run("info " + q);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(r.out.find("8 tensors, 6 quantized") != std::string::npos);
  // layer.w: 4773 codes + 19 absmax * 4 + 1024 table bytes for 19092 f32 bytes.
  CHECK(r.out.find(std::to_string(37 * 129 + 19 * 4 + 1024)) != std::string::npos);
  CHECK(r.out.find("3.25x") != std::string::npos);
  CHECK(r.out.find("SNR") == std::string::npos);
  for (const auto& p : {in, q}) fs::remove(p);
}

TEST_CASE("octet command line errors exit with 2 and the usage") {
  const std::string in = temp_path("args_in.safetensors"), q = temp_path("args_q.safetensors");
  save_safetensors(in, sample_checkpoint());
  const std::string base = "quantize " + in + " " + q + " ";
  const std::pair<std::string, std::string> cases[] = {
      {"", "usage: octet <command>"},
      {"frobnicate", "unknown command 'frobnicate'"},
      {"quantize", "expects IN and OUT"},
      {"quantize " + in, "expects IN and OUT"},
      {base + "--bogus", "unknown option '--bogus'"},
      {base + "-x", "unknown option '-x'"},
      {base + "--blocksize", "--blocksize needs a value"},
      {base + "--blocksize 100", "power of two, got 100"},
      {base + "--blocksize 16", "[32, 4096], got '16'"},
      {base + "--blocksize 8192", "[32, 4096], got '8192'"},
      {base + "--blocksize 64x", "integer in [32, 4096], got '64x'"},
      {base + "--blocksize 64 --blocksize 64", "given twice"},
      {base + "--global --blocksize 64", "exclude each other"},
      {base + "--global --nested", "--nested needs blockwise"},
      {base + "--nested=1", "takes no value"},
      {base + "--code bogus", "--code expects dynamic"},
      {base + "--skip '('", "invalid regular expression"},
      {base + "--device tpu", "--device expects cpu, cuda or cuda:N"},
      {base + "--device cuda:7", "CUDA device(s)"},
      {"dequantize " + in, "expects IN and OUT"},
      {"dequantize " + in + " " + q + " --blocksize 64", "unknown option '--blocksize'"},
      {"info", "expects one FILE"},
      {"info " + in + " --check", "--check needs a value"},
      {"bench --runs 0", "--runs expects an integer in [1, 100000], got '0'"},
      {"bench no-such-family", "no benchmark family 'no-such-family'"},
  };
  for (const auto& [args, message] : cases) {
    CAPTURE(args);
    const Run r = octet_run(args);
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.out.find(message) != std::string::npos, r.out);
    CHECK(r.out.find("usage: octet") != std::string::npos);
  }
  if (!test::has_gpu()) CHECK(octet_run(base + "--device cuda").code == 2);
  CHECK(!fs::exists(q));
  fs::remove(in);
}

TEST_CASE("octet rejects bad files with exit 1 and a message naming file and tensor") {
  const std::string in = temp_path("bad_in.safetensors"), q = temp_path("bad_q.safetensors"), out = temp_path("bad_out.safetensors");
  auto expect = [](const std::string& args, const std::string& message) {
    CAPTURE(args);
    const Run r = octet_run(args);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.out.find(message) != std::string::npos, r.out);
  };
  expect("quantize " + temp_path("missing") + " " + q, "cannot be read");
  expect("info " + temp_path("missing"), "cannot be read");
  // A state-tensor name that is already taken.
  save_safetensors(in, {{"w", Tensor::full({4}, 1.0)}, {"w.absmax", Tensor::full({1}, 1.0)}});
  expect("quantize " + in + " " + q + " --device cpu", "would collide with");
  CHECK(!fs::exists(q));
  REQUIRE(octet_run("quantize " + in + " " + q + " --device cpu --skip '^w$'").code == 0);
  // Already quantized.
  expect("quantize " + q + " " + out + " --device cpu", "already holds quantized tensors");

  save_safetensors(in, sample_checkpoint());
  REQUIRE(octet_run("quantize " + in + " " + q + " --blocksize 64 --nested --device cpu").code == 0);
  TensorMap stored = load_safetensors(q);
  Metadata meta = load_safetensors_metadata(q);
  auto rewrite = [&](TensorMap t, Metadata m) { save_safetensors(q, t, m); };
  const std::string deq = "dequantize " + q + " " + out + " --device cpu";
  {
    Metadata m = meta;
    m["octet.layer.w"] = "{not json";
    rewrite(stored, m);
    expect(deq, "tensor 'layer.w': metadata octet.layer.w is not valid JSON");
    m["octet.layer.w"] = R"({"blocksize": 100, "dtype": "F32", "nested": true, "code": "dynamic"})";
    rewrite(stored, m);
    expect(deq, "blocksize 100 is neither 0 nor a power of two");
    m["octet.layer.w"] = R"({"blocksize": 64, "dtype": "I32", "nested": true, "code": "dynamic"})";
    rewrite(stored, m);
    expect(deq, "original dtype 'I32'");
    m["octet.layer.w"] = R"({"blocksize": 0, "dtype": "F32", "nested": true, "code": "dynamic"})";
    rewrite(stored, m);
    expect(deq, "nested is only defined for blockwise");
    m["octet.layer.w"] = R"({"blocksize": 64, "dtype": "F32"})";
    rewrite(stored, m);
    expect(deq, "must be {\"blocksize\": int");
    m = meta;
    m["octet.ghost"] = meta.at("octet.layer.w");
    rewrite(stored, m);
    expect(deq, "tensor 'ghost': metadata octet.ghost names a tensor that is not in the file");
    m = meta;
    m["octet.layer.w.absmax"] = R"({"blocksize": 64, "dtype": "F32", "nested": false, "code": "dynamic"})";
    rewrite(stored, m);
    expect(deq, "its state tensor 'layer.w.absmax.absmax' belongs to another tensor too");
  }
  {
    TensorMap t = stored;
    t.erase("layer.w.absmax.offset");
    rewrite(t, meta);
    expect(deq, "tensor 'layer.w': its state tensor 'layer.w.absmax.offset' is missing");
    t = stored;
    t["layer.w"] = Tensor::zeros({37, 129}, DType::f32);
    rewrite(t, meta);
    expect(deq, "codes must be U8");
    t = stored;
    t["layer.w.absmax"] = Tensor::zeros({3}, DType::u8);
    rewrite(t, meta);
    expect(deq, "tensor 'layer.w': dequantize_blockwise: argument 'state.absmax'");
    t = stored;
    t["layer.w.code"] = Tensor::zeros({255}, DType::f32);
    rewrite(t, meta);
    expect(deq, "argument 'state.code'");
  }
  rewrite(stored, meta);
  save_safetensors(in, {{"other", Tensor::full({2}, 1.0)}});
  expect("info " + q + " --check " + in, "has no tensor");
  TensorMap reshaped = sample_checkpoint();
  reshaped["layer.w"] = Tensor::full({2}, 1.0);
  save_safetensors(in, reshaped);
  expect("info " + q + " --check " + in, "has shape (37, 129) but (2,)");
  CHECK(!fs::exists(out));
  for (const auto& p : {in, q, out}) fs::remove(p);
}

namespace {

// The eval-loss column of `octet demo` for the row starting with `label` (NaN when absent).
double demo_eval_loss(const std::string& out, const std::string& label) {
  const size_t at = out.find("\n" + label);
  if (at == std::string::npos) return NAN;
  const std::string line = out.substr(at + 1 + label.size(), out.find('\n', at + 1) - at - 1 - label.size());
  double a = NAN, b = NAN;
  const int n = std::sscanf(line.c_str(), "%lf %lf", &a, &b);
  return n == 2 ? b : n == 1 ? a : NAN;
}

void check_demo(const std::string& device_flag) {
  const Run r = octet_run("demo --steps 40 --seed 3 " + device_flag);
  REQUIRE_MESSAGE(r.code == 0, r.out);
  const double start = demo_eval_loss(r.out, "(initial weights)");
  CHECK(std::isfinite(start));
  for (const char* row : {"nn::Linear (f32)", "nn::LinearFP8Mixed", "nn::LinearFP8Global", "nn::LinearFP8 (FP8 GEMMs)"}) {
    CAPTURE(row);
    const double loss = demo_eval_loss(r.out, row);
    CHECK(std::isfinite(loss));
    CHECK(loss < start);  // every kind of layer learns
  }
}

}  // namespace

TEST_CASE("octet demo trains every kind of layer [cpu]") {
  const Run r = octet_run("demo --steps 5 --device cpu");
  REQUIRE_MESSAGE(r.code == 0, r.out);
  CHECK(r.out.find("5 steps") != std::string::npos);
  CHECK(r.out.find("gap to f32") != std::string::npos);
  check_demo("--device cpu");
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"demo --steps 0", "--steps expects an integer in [1, "},
           {"demo --lr -1", "--lr expects a finite number >= 0"},
           {"demo --lr nan", "--lr expects a finite number >= 0"},
           {"demo --seed x", "--seed expects an integer"},
           {"demo extra", "unexpected argument 'extra'"}}) {
    CAPTURE(args);
    const Run bad = octet_run(args);
    CHECK(bad.code == 2);
    CHECK_MESSAGE(bad.out.find(message) != std::string::npos, bad.out);
    CHECK(bad.out.find("usage: octet demo") != std::string::npos);
  }
}

OCTET_CUDA_TEST("octet demo trains every kind of layer on the GPU") { check_demo("--device cuda"); }

TEST_CASE("octet demo --optimizer trains with octet::optim and prints its memory [cpu]") {
  for (const char* name : {"sgd", "adamw", "adamw8bit"}) {
    CAPTURE(name);
    const Run r = octet_run(cat("demo --steps 20 --seed 3 --device cpu --optimizer ", name));
    REQUIRE_MESSAGE(r.code == 0, r.out);
    CHECK(r.out.find("optimizer mem") != std::string::npos);
    CHECK(r.out.find(" KiB") != std::string::npos);
    CHECK(demo_eval_loss(r.out, "nn::Linear (f32)") < demo_eval_loss(r.out, "(initial weights)"));
  }
  const Run bad = octet_run("demo --optimizer rmsprop");
  CHECK(bad.code == 2);
  CHECK(bad.out.find("--optimizer expects sgd, adamw or adamw8bit, got 'rmsprop'") != std::string::npos);
}
