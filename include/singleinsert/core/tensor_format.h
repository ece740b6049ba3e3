#pragma once
// Human-readable descriptions of tensors for error messages ("[320, 4, 3, 3]", "float16").
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace singleinsert {

std::string shape_string(at::IntArrayRef shape);
std::string dtype_string(at::ScalarType dtype);

}  // namespace singleinsert
