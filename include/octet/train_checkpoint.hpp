// Training checkpoints: a training run's whole state (step, parameters, optimizer state, clipping
// histories, the global random stream's position, user metadata) in one safetensors file,
// written atomically as a whole: the file at the path is either the previous checkpoint or the
// complete new one, also when the process is killed during the save or the disk fills up (the
// save goes through save_safetensors: temporary, fsync, rename, folder fsync).
// Loading checks the whole file (format, every tensor) before it returns anything; restore()
// checks every name, shape and dtype against the live tensors before it writes any of them, so
// a truncated, foreign or mismatched file is refused without touching the live model.
// File layout (plain safetensors, readable by any reader): tensors "param/<name>",
// "optim/<name>", "clip/<name>"; metadata "octet.training" = "1", "octet.step", "octet.rng.seed",
// "octet.rng.offset", "optim.<key>" (the optimizer's metadata) and "user.<key>".
// docs/reliability.md has the guarantees and the tests that show them.
#pragma once
#include <cstdint>
#include <string>

#include "octet/io.hpp"
#include "octet/random.hpp"

namespace octet {

struct TrainingCheckpoint {
  int64_t step = 0;            // >= 0: the number of steps done
  TensorMap parameters;        // the model's parameters by name (any device)
  TensorMap optimizer;         // the optimizer's state tensors (optim::Optimizer::state_dict().tensors)
  Metadata optimizer_metadata;  // and its metadata (state_dict().metadata)
  TensorMap clip;              // clipping histories and counters (ClipState::gnorm_vec, step)
  RngState rng;                // the global random stream's position (rng_state())
  Metadata user;               // anything else the trainer wants back
};

// Writes the checkpoint atomically to `path` (see above); the tensors are copied to the host one
// at a time. Names must be non-empty and valid UTF-8.
void save_training_checkpoint(const std::string& path, const TrainingCheckpoint& checkpoint);
// Reads a whole checkpoint onto `device`; a file that is not a complete training checkpoint of
// this format is an Error naming the file and what is wrong.
TrainingCheckpoint load_training_checkpoint(const std::string& path, Device device = Device::cpu());

// Throws an Error naming `what` and the first difference unless both maps hold the same names
// with the same shapes and dtypes. Writes nothing.
void check_restorable(const char* what, const TensorMap& saved, const TensorMap& live);
// check_restorable, then copies saved[name] into live[name] for every name without recording for
// autograd (copy_ under NoGradGuard, which also advances each tensor's storage version).
// To restore several parts all or nothing, check each part first, then write them.
void restore_tensors(const char* what, const TensorMap& saved, const TensorMap& live);

}  // namespace octet
