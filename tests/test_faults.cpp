// Faults: saves that fail part way (file-size limit reached, folder missing, target a folder,
// folder read-only) throw an octet::Error that names the file and the system's reason, leave the
// file already at the path byte for byte as it was and no temporary behind; ops that run out of
// memory part way throw and leave their inputs (values, gradients, autograd state) as they were.
// The file-size limit is set with setrlimit(RLIMIT_FSIZE) in a forked child that ignores
// SIGXFSZ, so a write past the limit fails with EFBIG as a full disk fails with ENOSPC.

#include "octet/dlpack.hpp"
#include "tests/fault_helpers.hpp"
#include "tests/helpers.hpp"

using namespace octet;
namespace fs = std::filesystem;

namespace {

TensorMap new_content() {
  manual_seed(31);
  return {{"a", randn({100, 37})}, {"b", randn({999}, DType::bf16)}, {"c", Tensor::zeros({0, 3})}};
}

// Limits that cut a save of `total` bytes everywhere that matters: nothing written, inside the
// 8-byte length, inside the header, at the data's start, inside the data, one byte short.
std::vector<uint64_t> cut_points(uint64_t total, uint64_t data_start) {
  return {0, 1, 7, 8, 9, data_start / 2, data_start - 1, data_start, data_start + 1, (data_start + total) / 2,
          total - 1};
}

// Saves `content` with `save` under every cut point and checks each failure; then the positive
// control: with the limit at the exact size the same save succeeds.
void check_cut_saves(const std::function<void(const std::string&, const TensorMap&)>& save) {
  const TensorMap content = new_content();
  const std::string reference = test::fault_temp_path("reference.safetensors");
  save(reference, content);
  const uint64_t total = fs::file_size(reference);
  const uint64_t data_start = read_safetensors_index(reference).data_start;
  const std::string path = test::fault_temp_path("cut.safetensors");
  save_safetensors(path, {{"previous", Tensor::full({5}, 7.0)}}, {{"kind", "previous"}});
  const std::string before = test::file_bytes(path);
  int injected = 0;
  for (uint64_t limit : cut_points(total, data_start)) {
    CAPTURE(limit);
    const test::ChildResult r = test::in_child_with_file_limit(limit, [&] { save(path, content); });
    CHECK(r.status == test::ChildResult::threw_error);
    CHECK(r.message.find(path) != std::string::npos);
    CHECK(r.message.find("File too large") != std::string::npos);
    CHECK(test::file_bytes(path) == before);
    CHECK(test::temporaries_of(path).empty());
    ++injected;
  }
  CHECK(injected == 11);
  const test::ChildResult whole = test::in_child_with_file_limit(total, [&] { save(path, content); });
  CHECK(whole.status == test::ChildResult::returned);
  CHECK(test::file_bytes(path) == test::file_bytes(reference));
  CHECK(test::temporaries_of(path).empty());
  fs::remove(path);
  fs::remove(reference);
}

}  // namespace

TEST_CASE("faults: save_safetensors cut by the file-size limit leaves the previous file and no temporary") {
  check_cut_saves([](const std::string& p, const TensorMap& m) { save_safetensors(p, m, {{"k", "v"}}); });
}

TEST_CASE("faults: SafetensorsWriter cut by the file-size limit leaves the previous file and no temporary") {
  check_cut_saves([](const std::string& p, const TensorMap& m) {
    SafetensorsWriter w(p);
    for (const auto& [name, t] : m) w.add(name, t);
    w.set_metadata("k", "v");
    w.close();
  });
}

namespace {

// An AdamW8bit over one 8-bit-state weight and a small f32-state bias, with clipping, after a
// few steps (its state differs from a fresh one's everywhere).
struct Trained {
  Tensor weight, bias;
  optim::AdamW8bit opt;
  explicit Trained(uint64_t seed)
      : weight(Tensor::zeros({65, 70}).requires_grad_()), bias(Tensor::zeros({65}).requires_grad_()),
        opt(std::vector<Tensor>{weight, bias}, {.lr = 0.01, .percentile_clipping = 5}) {
    manual_seed(seed);
    for (int step = 0; step < 3; ++step) {
      weight.set_grad(randn({65, 70}));
      bias.set_grad(randn({65}));
      opt.step();
    }
  }
};

// The optimizer's whole state and its parameters, for before/after comparisons.
TensorMap snapshot(const Trained& t) {
  TensorMap m = t.opt.state_dict().tensors;
  m["weight"] = t.weight.detach().clone();
  m["bias"] = t.bias.detach().clone();
  return m;
}

bool same_maps(const TensorMap& a, const TensorMap& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a)
    if (!b.count(name) || !test::bitwise_equal(t, b.at(name))) return false;
  return true;
}

}  // namespace

TEST_CASE("faults: an optimizer state save cut by the file-size limit leaves the previous file") {
  const Trained trained(61);
  check_cut_saves([&](const std::string& p, const TensorMap&) { trained.opt.save(p); });
}

TEST_CASE("faults: a training checkpoint save cut by the file-size limit leaves the previous file") {
  const Trained trained(62);
  check_cut_saves([&](const std::string& p, const TensorMap& m) {
    TrainingCheckpoint c;
    c.step = 3;
    c.parameters = m;
    const optim::StateDict state = trained.opt.state_dict();
    c.optimizer = state.tensors;
    c.optimizer_metadata = state.metadata;
    c.rng = rng_state();
    save_training_checkpoint(p, c);
  });
}

TEST_CASE("faults: a truncated or mismatched optimizer state is refused and the optimizer keeps its state") {
  Trained live(63);
  const TensorMap before = snapshot(live);
  const Trained other(64);
  const std::string path = test::fault_temp_path("optim.safetensors");
  other.opt.save(path);
  const std::string whole = test::file_bytes(path);
  int refused = 0;
  for (size_t keep : {size_t{0}, size_t{8}, size_t{100}, whole.size() / 2, whole.size() - 1}) {
    CAPTURE(keep);
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(whole.data(), static_cast<std::streamsize>(keep));
    CHECK_THROWS_AS(live.opt.load(path), Error);
    CHECK(same_maps(snapshot(live), before));
    ++refused;
  }
  // Mismatched: another algorithm's state, other parameter shapes.
  Tensor w = Tensor::zeros({65, 70}).requires_grad_(), b = Tensor::zeros({65}).requires_grad_();
  optim::AdamW adamw(std::vector<Tensor>{w, b});
  adamw.save(path);
  CHECK_THROWS_AS(live.opt.load(path), Error);
  CHECK(same_maps(snapshot(live), before));
  Tensor small = Tensor::zeros({5, 70}).requires_grad_();
  optim::AdamW8bit other_shapes(std::vector<Tensor>{small, b}, {.lr = 0.01, .percentile_clipping = 5});
  other_shapes.save(path);
  CHECK_THROWS_AS(live.opt.load(path), Error);
  CHECK(same_maps(snapshot(live), before));
  refused += 2;
  CHECK(refused == 7);
  // The intact file of the same layout loads.
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(whole.data(), static_cast<std::streamsize>(whole.size()));
  live.opt.load(path);
  CHECK(same_maps(live.opt.state_dict().tensors, other.opt.state_dict().tensors));
  fs::remove(path);
}

TEST_CASE("faults: saves to a missing folder, onto a folder or under a file fail cleanly") {
  const Tensor x = Tensor::full({4}, 1.0);
  const std::string missing = test::fault_temp_path("no-such-folder") + "/x.safetensors";
  CHECK_THROWS_WITH_AS(save_safetensors(missing, {{"x", x}}), doctest::Contains("No such file or directory"), Error);
  CHECK_THROWS_WITH_AS(SafetensorsWriter{missing}, doctest::Contains("No such file or directory"), Error);
  // The target is a folder: the rename fails, the folder and its content stay.
  const std::string folder = test::fault_temp_path("a-folder");
  fs::create_directory(folder);
  std::ofstream(folder + "/inside") << "kept";
  CHECK_THROWS_WITH_AS(save_safetensors(folder, {{"x", x}}), doctest::Contains("cannot rename"), Error);
  CHECK(fs::is_directory(folder));
  CHECK(test::file_bytes(folder + "/inside") == "kept");
  CHECK(test::temporaries_of(folder).empty());
  // A path under a regular file.
  const std::string file = test::fault_temp_path("a-file");
  std::ofstream(file) << "kept";
  CHECK_THROWS_WITH_AS(save_safetensors(file + "/x.safetensors", {{"x", x}}), doctest::Contains("Not a directory"), Error);
  CHECK(test::file_bytes(file) == "kept");
  fs::remove_all(folder);
  fs::remove(file);
}

// root may write anywhere: the case needs an ordinary user.
TEST_CASE("faults: a save into a read-only folder fails and leaves the file there" * doctest::skip(::geteuid() == 0)) {
  const std::string folder = test::fault_temp_path("read-only");
  fs::create_directory(folder);
  const std::string path = folder + "/x.safetensors";
  save_safetensors(path, {{"previous", Tensor::full({5}, 7.0)}});
  const std::string before = test::file_bytes(path);
  fs::permissions(folder, fs::perms::owner_read | fs::perms::owner_exec);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"x", Tensor::full({4}, 1.0)}}), doctest::Contains("Permission denied"),
                       Error);
  fs::permissions(folder, fs::perms::owner_all);
  CHECK(test::file_bytes(path) == before);
  CHECK(test::temporaries_of(path).empty());
  fs::remove_all(folder);
}

TEST_CASE("faults: a truncated or edited safetensors file is refused, whatever byte it ends at") {
  const std::string path = test::fault_temp_path("whole.safetensors");
  save_safetensors(path, new_content());
  const std::string whole = test::file_bytes(path);
  const std::string cut = test::fault_temp_path("truncated.safetensors");
  int refused = 0;
  for (size_t keep : {size_t{0}, size_t{4}, size_t{8}, size_t{60}, whole.size() / 2, whole.size() - 1}) {
    CAPTURE(keep);
    std::ofstream(cut, std::ios::binary | std::ios::trunc).write(whole.data(), static_cast<std::streamsize>(keep));
    CHECK_THROWS_WITH_AS(load_safetensors(cut), doctest::Contains("load_safetensors: file '"), Error);
    ++refused;
  }
  CHECK(refused == 6);
  fs::remove(cut);
  fs::remove(path);
}

namespace {

// An op whose output cannot be allocated, after its inputs were checked (and, for the FP8
// layers, after its quantized operands were made): it throws, the inputs keep their values and
// storage versions, and no gradient appears.
void out_of_memory_leaves_inputs(Device device) {
  manual_seed(41);
  // (2^23 x 1) x (1 x 2^23): a 256 TiB f32 output, past any address space (also with overcommit).
  constexpr int64_t kRows = int64_t{1} << 23;
  const Tensor a = Tensor::full({kRows, 1}, 0.25, DType::f32, device).requires_grad_();
  const Tensor b = Tensor::full({1, kRows}, -1.5, DType::f32, device).requires_grad_();
  const Tensor a_before = a.detach().clone(), b_before = b.detach().clone();
  const uint64_t a_version = a.impl()->storage->version;
  CHECK_THROWS_WITH_AS(matmul(a, b), doctest::Contains("out of"), Error);
  CHECK(test::bitwise_equal(a.detach(), a_before));
  CHECK(test::bitwise_equal(b.detach(), b_before));
  CHECK(a.impl()->storage->version == a_version);
  CHECK(!a.grad().defined());
  CHECK(!b.grad().defined());

  nn::LinearFP8Mixed wide(1, kRows, true, device);
  const Tensor weight_before = wide.weight.detach().clone(), bias_before = wide.bias.detach().clone();
  const Tensor x = Tensor::full({kRows, 1}, 0.75, DType::f32, device);
  CHECK_THROWS_WITH_AS(wide.forward(x), doctest::Contains("out of"), Error);
  CHECK(test::bitwise_equal(wide.weight.detach(), weight_before));
  CHECK(test::bitwise_equal(wide.bias.detach(), bias_before));
  CHECK(!wide.weight.grad().defined());
  CHECK(!wide.bias.grad().defined());
  // The inputs still work: a sane product of them gives what it gives on fresh copies.
  const Tensor head = Tensor::from_vector(std::vector<float>{0.25f, 0.25f, 0.25f}, {3, 1}, device);
  CHECK(test::bitwise_equal(matmul(head, b.detach()).to(Device::cpu()),
                            matmul(head, b_before).to(Device::cpu())));
}

}  // namespace

OCTET_TEST_BOTH("faults: an op that runs out of memory leaves its inputs intact", out_of_memory_leaves_inputs)

// Inputs tools/fuzz-dlpack found: a null data pointer with an offset was taken for memory, and
// exporting an empty import whose other sizes multiply past 2^63 overflowed its strides.
TEST_CASE("faults: DLPack imports the fuzzer found problems with") {
  int deleted = 0;
  int64_t shape[3] = {4, 1, 1};
  DLManagedTensorVersioned managed{};
  managed.version = {1, 1};
  managed.manager_ctx = &deleted;
  managed.deleter = [](DLManagedTensorVersioned* self) { ++*static_cast<int*>(self->manager_ctx); };
  managed.dl_tensor.data = nullptr;
  managed.dl_tensor.byte_offset = 2;
  managed.dl_tensor.device = {kDLCPU, 0};
  managed.dl_tensor.ndim = 1;
  managed.dl_tensor.dtype = {kDLUInt, 8, 1};
  managed.dl_tensor.shape = shape;
  CHECK_THROWS_WITH_AS(from_dlpack(&managed), doctest::Contains("argument 'dl_tensor.data': expected a pointer"), Error);
  CHECK(deleted == 0);

  alignas(64) static uint8_t byte = 0;
  int64_t empty_shape[3] = {0, int64_t{1} << 40, int64_t{1} << 40};
  managed.dl_tensor.data = &byte;
  managed.dl_tensor.byte_offset = 0;
  managed.dl_tensor.ndim = 3;
  managed.dl_tensor.shape = empty_shape;
  {
    const Tensor empty = from_dlpack(&managed);
    CHECK(empty.numel() == 0);
    DLManagedTensorVersioned* exported = to_dlpack(empty);
    REQUIRE(exported != nullptr);
    CHECK(exported->dl_tensor.strides[2] == 1);
    CHECK(exported->dl_tensor.strides[1] == int64_t{1} << 40);
    CHECK(exported->dl_tensor.strides[0] == 0);  // past 2^63: meaningless for an empty tensor
    exported->deleter(exported);
  }
  CHECK(deleted == 1);
}
