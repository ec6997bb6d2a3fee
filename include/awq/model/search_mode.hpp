/// \file
/// \brief How the per-block flow searches: the reference's semantics (llm-awq's run_awq, bit for
///        bit) or the improved search, and the variants between them.
#pragma once

#include <string>

#include "awq/error.hpp"

namespace awq::model {

/// \brief Search variants of the per-block flow; the default is the reference.
struct SearchMode {
  /// Each block is calibrated on the output of the blocks before it as quantized (their
  /// finalized weights), not as full precision: the searches then see the inputs the exported
  /// model will give the block, and compensate the error the earlier blocks left.
  bool sequential = false;
  /// Local α refinement after the grid (ScaleSearchOptions::refine_steps; 0: the grid alone).
  int alpha_refine = 0;

  /// llm-awq's semantics: the golden tests hold bit for bit.
  static SearchMode reference() { return {}; }
  /// Every kept variant.
  static SearchMode improved() { return {true, 3}; }

  /// The preset names, for command lines and reports.
  static const char* names() { return "reference, improved, sequential, refine"; }
  /// \brief The preset called `name`: "reference", "improved", or one variant alone
  ///        ("sequential", "refine").
  /// \throws awq::Error naming the value and the accepted names.
  static SearchMode parse(const std::string& name) {
    if (name == "reference") return reference();
    if (name == "improved") return improved();
    if (name == "sequential") return {true, 0};
    if (name == "refine") return {false, improved().alpha_refine};
    throw Error("awq::model::SearchMode: '" + name + "' is not a search mode (accepted: " + names() + ")");
  }
  /// Whether this is the reference.
  bool is_reference() const { return !sequential && alpha_refine == 0; }
};

}  // namespace awq::model
