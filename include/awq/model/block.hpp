/// \file
/// \brief One transformer block's weights in a backend's memory (`awq::model::Block`), the batch
///        layout of activations (`Batch`) and the description of a block tensor (`TensorSpec`).
///
/// A block is a map from the tensor's name relative to the block ("self_attn.q_proj.weight") to
/// an fp32 tensor held in `Backend::buffer` (host memory for backend::cpu, device memory for
/// backend::cuda). Only one block lives at a time in the model driver.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "awq/error.hpp"
#include "awq/view.hpp"

namespace awq::model {

/// \brief Activations are n_seq sequences of seq_len tokens, the rows of every activation matrix.
struct Batch {
  int n_seq = 1;    ///< sequences
  int seq_len = 0;  ///< tokens per sequence
  index_t tokens() const { return static_cast<index_t>(n_seq) * seq_len; }  ///< rows
};

/// \brief A tensor of a block: its name relative to the block and its shape ([out, in] or [n]).
struct TensorSpec {
  std::string name;                ///< e.g. "self_attn.q_proj.weight"
  std::vector<std::int64_t> shape;  ///< Hugging Face order
};

/// \brief A linear's product y = x · Wᵀ (+ bias) computed from its quantized form rather than
///        from dequantized fp32 weights: an architecture's forward uses it when the block holds
///        one (Block::set_linear).
using LinearOp = std::function<void(const MatrixView<const float>& x, const MatrixView<float>& y)>;

/// \brief An fp32 tensor in the memory of `Backend`.
template <class Backend>
struct Tensor {
  typename Backend::template buffer<float> data;  ///< row-major values
  index_t rows = 0;                                ///< shape[0]
  index_t cols = 1;                                ///< shape[1], or 1 for a vector

  /// The tensor as a [rows, cols] matrix.
  MatrixView<float> matrix() const { return make_row_major<float>(const_cast<float*>(data.data()), rows, cols); }
  /// A vector as one row [1, n] (a norm weight, whose scales fold along columns).
  MatrixView<float> as_row() const { return make_row_major<float>(const_cast<float*>(data.data()), 1, rows * cols); }
  /// A vector as one column [n, 1] (a previous linear's bias, whose scales fold along rows).
  MatrixView<float> as_col() const { return make_row_major<float>(const_cast<float*>(data.data()), rows * cols, 1); }
  /// Elements.
  index_t size() const { return rows * cols; }
};

/// \brief One block's tensors by relative name.
template <class Backend>
class Block {
 public:
  /// The tensor `name`; awq::Error naming it when the block has none.
  Tensor<Backend>& at(const std::string& name) {
    const auto it = t_.find(name);
    detail::require(it != t_.end(), "awq::model::Block: no tensor '", name, "'");
    return it->second;
  }
  /// \copydoc at
  const Tensor<Backend>& at(const std::string& name) const { return const_cast<Block*>(this)->at(name); }
  /// Whether the block has `name` (optional tensors: biases).
  bool contains(const std::string& name) const { return t_.count(name) != 0; }
  /// Adds (or replaces) a tensor from host values of the given shape.
  void put(const std::string& name, const std::vector<std::int64_t>& shape, const std::vector<float>& host) {
    detail::require(shape.size() == 1 || shape.size() == 2, "awq::model::Block::put: '", name, "' has ", shape.size(),
                    " dimensions (a block holds vectors and matrices)");
    Tensor<Backend> t;
    t.rows = static_cast<index_t>(shape[0]);
    t.cols = shape.size() > 1 ? static_cast<index_t>(shape[1]) : 1;
    detail::require(static_cast<std::size_t>(t.rows * t.cols) == host.size(), "awq::model::Block::put: '", name, "' has ",
                    host.size(), " values for its shape");
    t.data = Backend::upload(host.data(), host.size());
    t_[name] = std::move(t);
  }
  /// A copy of tensor `name` on the host.
  std::vector<float> host(const std::string& name) const {
    const auto& t = at(name);
    std::vector<float> v(static_cast<std::size_t>(t.size()));
    Backend::download(t.data.data(), v.size(), v.data());
    return v;
  }
  /// A deep copy (the driver keeps the original weights for the FP and RTN streams).
  Block clone() const {
    Block b;
    for (const auto& [name, t] : t_) {
      Tensor<Backend> c;
      c.rows = t.rows;
      c.cols = t.cols;
      std::vector<float> v(static_cast<std::size_t>(t.size()));
      Backend::download(t.data.data(), v.size(), v.data());
      c.data = Backend::upload(v.data(), v.size());
      b.t_[name] = std::move(c);
    }
    return b;
  }
  /// Names in order.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& kv : t_) n.push_back(kv.first);
    return n;
  }

  /// Makes the forward compute linear `name` ("mlp.up_proj") with `op` (bias included) instead of
  /// its fp32 weight; an empty op removes it. Search modules never use it. Not copied by clone().
  void set_linear(const std::string& name, LinearOp op) {
    if (op) ops_[name] = std::move(op);
    else ops_.erase(name);
  }
  /// The op set for linear `name`, or nullptr.
  const LinearOp* linear_op(const std::string& name) const {
    const auto it = ops_.find(name);
    return it == ops_.end() ? nullptr : &it->second;
  }

 private:
  std::map<std::string, Tensor<Backend>> t_;
  std::map<std::string, LinearOp> ops_;
};

/// The data of `buf`, first regrown to n elements if it holds fewer: a search module keeps its
/// temporaries across the grid's calls, since a device allocation and free per call costs a
/// synchronisation and page mapping each time.
template <class Buffer>
auto* grown(Buffer& buf, index_t n) {
  if (buf.size() < static_cast<std::size_t>(n)) buf = Buffer(static_cast<std::size_t>(n));
  return buf.data();
}

/// grown(buf, ·) holding n values of type A in a buffer of wider elements (a search module's fp32
/// scratch that keeps 16-bit activations under a 16-bit math: backend::cuda::with_activation).
template <class A, class Buffer>
A* grown_as(Buffer& buf, index_t n) {
  using E = std::remove_pointer_t<decltype(buf.data())>;
  static_assert(sizeof(A) <= sizeof(E) && alignof(A) <= alignof(E), "A must fit the buffer's elements");
  return reinterpret_cast<A*>(grown(buf, (n * static_cast<index_t>(sizeof(A)) + static_cast<index_t>(sizeof(E)) - 1) /
                                             static_cast<index_t>(sizeof(E))));
}

/// The weight [out, in] of linear `linear` ("self_attn.q_proj") of `blk`.
template <class Backend>
MatrixView<const float> linear_weight(const Block<Backend>& blk, const std::string& linear) {
  return blk.at(linear + ".weight").matrix();
}

/// The bias of linear `linear` of `blk`, or nullptr when it has none.
template <class Backend>
const float* linear_bias(const Block<Backend>& blk, const std::string& linear) {
  return blk.contains(linear + ".bias") ? blk.at(linear + ".bias").data.data() : nullptr;
}

/// y = linear `name` of `blk` on x: with `ops`, the block's op for it (Block::set_linear) where it
/// holds one; else the weight `w` and the block's bias through Backend::linear. A forward passes
/// the block's own weights and `ops`; a search module passes candidate weights and no `ops`, and
/// may ask for y in its activation type Y (Backend::with_activation).
template <class Backend, class Y>
void linear_forward(const Block<Backend>& blk, const std::string& name, bool ops, const MatrixView<const float>& x,
                    const MatrixView<const float>& w, const MatrixView<Y>& y) {
  const LinearOp* op = ops ? blk.linear_op(name) : nullptr;
  if constexpr (std::is_same_v<Y, float>) {
    if (op) return (*op)(x, y);
  } else {
    detail::require(op == nullptr, "awq::model::linear_forward: the op of '", name, "' writes fp32, not a 16-bit y");
  }
  Backend::linear(x, w, linear_bias(blk, name), y);
}

}  // namespace awq::model
