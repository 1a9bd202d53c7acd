// Argument validation shared by every op's dispatch point. Each check throws octet::Error with
// "<op>: argument '<arg>': expected <what>, got <what>".
#pragma once
#include <initializer_list>
#include <string>
#include <string_view>

#include "octet/tensor.hpp"

namespace octet::check {

std::string dtypes_str(std::initializer_list<DType> allowed);  // "f32, f16 or bf16"

void defined(std::string_view op, std::string_view arg, const Tensor& t);
void dtype_in(std::string_view op, std::string_view arg, const Tensor& t, std::initializer_list<DType> allowed);
void dtype_is(std::string_view op, std::string_view arg, const Tensor& t, DType expected);
void device_is(std::string_view op, std::string_view arg, const Tensor& t, Device expected);
void shape_is(std::string_view op, std::string_view arg, const Tensor& t, const Shape& expected);
void dim_in(std::string_view op, std::string_view arg, const Tensor& t, int64_t lo, int64_t hi);
// t is not a read-only import (in-place writers and ops that write into their arguments).
void writable(std::string_view op, std::string_view arg, const Tensor& t);
// The device exists on this machine (cuda:N with N < cuda_device_count()).
void usable(std::string_view op, Device device);
// The element count of a new tensor: dtype one of the enumerators, sizes non-negative, and the
// byte count at most 2^63 - 1 (nothing wraps around); throws naming `op` otherwise.
int64_t numel_of(std::string_view op, const Shape& shape, DType dtype);

}  // namespace octet::check
