// Training checkpoints: every part survives a save and a load bit for bit (on either device),
// the random stream continues where it stood, and files that are not complete checkpoints of the
// live model (other format, bad metadata, foreign tensors, other shapes or dtypes, missing or
// extra names) are refused before anything live is written. The faults (saves cut by a file-size
// limit, truncated files) are in tests/test_faults.cpp; the kill-and-resume soak in tests/soak/.
#include "tests/fault_helpers.hpp"
#include "tests/helpers.hpp"

using namespace octet;
namespace fs = std::filesystem;

namespace {

TrainingCheckpoint sample_checkpoint(Device device) {
  manual_seed(51);
  TrainingCheckpoint c;
  c.step = 1234;
  c.parameters = {{"l1.weight", randn({16, 8}).to(device)}, {"l1.bias", randn({16}, DType::bf16).to(device)}};
  c.optimizer = {{"param.0.state1", randn({16, 8}).to(DType::u8).to(device)},
                 {"param.0.absmax1", randn({1}).to(device)},
                 {"param.1.step", Tensor::full({}, 7.0, DType::i64, device)}};
  c.optimizer_metadata = {{"algorithm", "adamw8bit"}, {"lr", "0.001"}};
  c.clip = {{"gnorm_vec", randn({100}).to(device)}, {"step", Tensor::full({}, 1235.0, DType::i64, device)}};
  c.rng = rng_state();
  c.user = {{"note", "sample"}};
  return c;
}

void check_same_tensors(const TensorMap& got, const TensorMap& want) {
  REQUIRE(got.size() == want.size());
  for (const auto& [name, t] : want) {
    CAPTURE(name);
    REQUIRE(got.count(name) == 1);
    CHECK(test::bitwise_equal(got.at(name).to(Device::cpu()), t.to(Device::cpu())));
  }
}

void round_trip(Device device) {
  const TrainingCheckpoint c = sample_checkpoint(device);
  const std::string path = test::fault_temp_path("train.safetensors");
  save_training_checkpoint(path, c);
  CHECK(test::temporaries_of(path).empty());
  const TrainingCheckpoint back = load_training_checkpoint(path, device);
  CHECK(back.step == c.step);
  CHECK(back.rng == c.rng);
  CHECK(back.optimizer_metadata == c.optimizer_metadata);
  CHECK(back.user == c.user);
  check_same_tensors(back.parameters, c.parameters);
  check_same_tensors(back.optimizer, c.optimizer);
  check_same_tensors(back.clip, c.clip);
  for (const auto& [name, t] : back.parameters) CHECK(t.device() == device);
  // Any safetensors reader sees the parts under their prefixes.
  const TensorMap raw = load_safetensors(path);
  CHECK(raw.count("param/l1.weight") == 1);
  CHECK(raw.count("optim/param.1.step") == 1);
  CHECK(raw.count("clip/gnorm_vec") == 1);
  CHECK(load_safetensors_metadata(path).at("octet.step") == "1234");
  fs::remove(path);
}

}  // namespace

OCTET_TEST_BOTH("training checkpoint: every part round-trips bit for bit", round_trip)

TEST_CASE("training checkpoint: the random stream continues where it was saved") {
  manual_seed(52);
  (void)randn({13});
  const RngState saved = rng_state();
  const std::vector<float> next = randn({9}).to_vector<float>();
  manual_seed(999);
  (void)rand({5});
  set_rng_state(saved);
  CHECK(randn({9}).to_vector<float>() == next);
  CHECK(rng_state().offset == saved.offset + 10);  // nine values drawn as ten (even counts)
}

TEST_CASE("training checkpoint: restore writes nothing unless every tensor matches") {
  const TrainingCheckpoint c = sample_checkpoint(Device::cpu());
  manual_seed(53);
  Tensor w = randn({16, 8}).requires_grad_(), b = randn({16}, DType::bf16).requires_grad_();
  const Tensor w_before = w.detach().clone(), b_before = b.detach().clone();
  auto untouched = [&] {
    CHECK(test::bitwise_equal(w.detach(), w_before));
    CHECK(test::bitwise_equal(b.detach(), b_before));
  };
  // The mismatch is in the last name checked ("l1.weight" sorts after "l1.bias"): nothing is written.
  TensorMap wrong_shape = c.parameters;
  wrong_shape["l1.weight"] = randn({8, 16});
  CHECK_THROWS_WITH_AS(restore_tensors("parameters", wrong_shape, {{"l1.weight", w}, {"l1.bias", b}}),
                       doctest::Contains("'l1.weight' is f32(8, 16) in the checkpoint but f32(16, 8) in the live model"),
                       Error);
  untouched();
  TensorMap wrong_dtype = c.parameters;
  wrong_dtype["l1.weight"] = c.parameters.at("l1.weight").to(DType::f16);
  CHECK_THROWS_WITH_AS(restore_tensors("parameters", wrong_dtype, {{"l1.weight", w}, {"l1.bias", b}}),
                       doctest::Contains("f16(16, 8) in the checkpoint"), Error);
  untouched();
  CHECK_THROWS_WITH_AS(restore_tensors("parameters", {{"l1.bias", c.parameters.at("l1.bias")}},
                                       {{"l1.weight", w}, {"l1.bias", b}}),
                       doctest::Contains("parameters: 'l1.weight' is not in the checkpoint"), Error);
  untouched();
  CHECK_THROWS_WITH_AS(restore_tensors("parameters", c.parameters, {{"l1.weight", w}}),
                       doctest::Contains("the checkpoint holds 'l1.bias', which the live model lacks"), Error);
  untouched();
  // A match writes every tensor (through NoGradGuard: these require grad) and bumps its version.
  const uint64_t version = w.impl()->storage->version;
  restore_tensors("parameters", c.parameters, {{"l1.weight", w}, {"l1.bias", b}});
  CHECK(test::bitwise_equal(w.detach(), c.parameters.at("l1.weight")));
  CHECK(test::bitwise_equal(b.detach(), c.parameters.at("l1.bias")));
  CHECK(w.impl()->storage->version > version);
  CHECK(w.requires_grad());
}

TEST_CASE("training checkpoint: files that are not complete checkpoints are refused") {
  const std::string path = test::fault_temp_path("not-training.safetensors");
  auto load_error = [&] {
    try {
      (void)load_training_checkpoint(path);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  save_safetensors(path, {{"param/x", Tensor::full({2}, 1.0)}});
  CHECK(load_error().find("is not an octet training checkpoint") != std::string::npos);
  save_safetensors(path, {{"param/x", Tensor::full({2}, 1.0)}}, {{"octet.training", "2"}});
  CHECK(load_error().find("format version '2'") != std::string::npos);
  const Metadata good{{"octet.training", "1"}, {"octet.step", "3"}, {"octet.rng.seed", "1"}, {"octet.rng.offset", "0"}};
  Metadata bad_step = good;
  bad_step["octet.step"] = "-3";
  save_safetensors(path, {{"param/x", Tensor::full({2}, 1.0)}}, bad_step);
  CHECK(load_error().find("metadata 'octet.step' is not a non-negative integer (got '-3')") != std::string::npos);
  Metadata no_seed = good;
  no_seed.erase("octet.rng.seed");
  save_safetensors(path, {{"param/x", Tensor::full({2}, 1.0)}}, no_seed);
  CHECK(load_error().find("metadata 'octet.rng.seed' is missing") != std::string::npos);
  save_safetensors(path, {{"weights/x", Tensor::full({2}, 1.0)}}, good);
  CHECK(load_error().find("tensor 'weights/x' belongs to no part") != std::string::npos);
  save_safetensors(path, {{"param/x", Tensor::full({2}, 1.0)}}, good);
  CHECK(load_training_checkpoint(path).step == 3);
  TrainingCheckpoint negative;
  negative.step = -1;
  CHECK_THROWS_WITH_AS(save_training_checkpoint(path, negative), doctest::Contains("a step >= 0"), Error);
  TrainingCheckpoint undefined;
  undefined.clip["h"] = Tensor();
  CHECK_THROWS_WITH_AS(save_training_checkpoint(path, undefined), doctest::Contains("argument 'clip/h'"), Error);
  CHECK(load_training_checkpoint(path).step == 3);  // the failed saves left the file as it was
  fs::remove(path);
}
