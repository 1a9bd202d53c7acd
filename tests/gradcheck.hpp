// Gradient checks for tests: gradcheck compares the tape's gradients with central differences
// (f64 inputs on the CPU), and grads_of / compare_grads run one function in another dtype or on
// another device so it can be compared with its f64 CPU run.
// A checked function takes its inputs as a vector and returns one tensor of any shape; inputs
// whose requires_grad() is set are differentiated, the others are held constant.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "octet/octet.hpp"

namespace octet::test {

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct GradcheckOptions {
  double eps = 1e-6;    // central-difference step
  double atol = 1e-7;   // |analytic - numeric| <= atol + rtol * |numeric|, per entry
  double rtol = 1e-6;
  int64_t max_full = 20000;  // full Jacobians while (outputs x inputs) stays below this
  int probes = 6;            // random v^T J u probes otherwise
};

struct GradcheckResult {
  bool ok = true;
  double max_error = 0;    // largest |analytic - numeric| - rtol * |numeric| seen (<= atol when ok)
  std::string report;      // the first mismatches, "" when ok
};

// Checks f's gradients at `inputs` (f64 tensors on the CPU). With full Jacobians it runs one
// backward per output element (one-hot seeds) and two forwards per input element; otherwise it
// compares v^T J u for random u, v. Also fails when f's output does not require grad.
GradcheckResult gradcheck(const GradFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opt = {});

// Runs f on fresh leaves with the values of inputs (same requires_grad flags) and backward with
// seed; returns {output, grad of each input} (grads undefined for constant inputs). The inputs'
// own grads are left alone.
std::vector<Tensor> grads_of(const GradFn& f, const std::vector<Tensor>& inputs, const Tensor& seed);

// The inputs converted to dtype t (floating inputs only) and moved to device d, requires_grad
// flags kept.
std::vector<Tensor> converted(const std::vector<Tensor>& inputs, DType t, Device d);

// ||a - b|| / ||b|| over a list of tensors taken together (both lists as f64 on the CPU,
// undefined entries skipped; an entry defined in one list only counts as infinitely wrong).
double rel_error_all(const std::vector<Tensor>& a, const std::vector<Tensor>& b);

// Unit roundoff of a floating dtype (2^-53, 2^-24, 2^-11, 2^-8).
double unit_roundoff(DType t);

}  // namespace octet::test
