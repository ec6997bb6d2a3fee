/// \file
/// \brief How the per-block flow searches: the reference's semantics (llm-awq's run_awq, bit for
///        bit) or the improved search, and the variants between them.
#pragma once

#include <algorithm>
#include <iterator>
#include <optional>
#include <string>
#include <utility>

#include "awq/error.hpp"
#include "awq/gptq.hpp"

namespace awq::model {

/// \brief Search variants of the per-block flow; the default is the reference.
struct SearchMode {
  /// Each block is calibrated on the output of the blocks before it as quantized (their
  /// finalized weights), not as full precision: the searches then see the inputs the exported
  /// model will give the block, and compensate the error the earlier blocks left.
  bool sequential = false;
  /// Local α refinement after the grid (ScaleSearchOptions::refine_steps; 0: the grid alone).
  int alpha_refine = 0;
  /// The refinement steps of the "refine" variant.
  static constexpr int kRefineSteps = 3;
  /// How the final quantization picks the codes of the scaled, clipped weights.
  enum class Rounding {
    nearest,             ///< each weight to its nearest code (the reference)
    gptq,                ///< GPTQ's error feedback (awq/gptq.hpp), group scales and zeros as `nearest`'s
    gptq_regroup,        ///< GPTQ's error feedback, each group's scale and zero from its updated weights
    /// GPTQ's error feedback, each group's scale and zero from its updated weights within the
    /// range of the weights before it (GptqOptions::Groups::updated_within): the clip bounds hold
    gptq_regroup_within
  };
  /// The gptq roundings by their names in parse() and variants().
  static constexpr std::pair<const char*, Rounding> kRoundings[] = {
      {"gptq", Rounding::gptq}, {"gptq-regroup", Rounding::gptq_regroup}, {"gptq-regroup-within", Rounding::gptq_regroup_within}};
  Rounding rounding = Rounding::nearest;  ///< the final quantization's rounding
  /// GPTQ's damping in the gptq roundings: λ = damp · mean(diag H) (GptqOptions::damp); unset,
  /// default_gptq_damp(bits). More damping pulls the codes towards nearest rounding: less of the
  /// gain on text like the calibration's, less of the loss on text of another kind.
  std::optional<double> gptq_damp;
  /// With sequential calibration and a gptq rounding: the share β of the way GPTQ's target moves
  /// from each linear's output on the quantized model's input X̃ (GPTQ's own target, 0) to its
  /// output on the full-precision model's input X (1): the rounding then also corrects the error
  /// the blocks before it left (awq/model/finalize.hpp, retarget_linear). The full least-squares
  /// step (1) fits the calibration stream's error too closely; kFpTarget keeps a quarter of it.
  double fp_target = 0;
  /// β of the "fp-target" variant (bench/RESULTS.md).
  static constexpr double kFpTarget = 0.25;

  /// The damping by code width where none is given: 0.05 from 4 bits up, 0.5 below. GPTQ's own
  /// 0.01 fits the calibration text's input correlations closely; at 3 bits every rounding error,
  /// and so every update the feedback spreads, is about twice as large, and text of another kind
  /// pays most for that fit there (the sweep behind both values: bench/RESULTS.md).
  static double default_gptq_damp(int bits) { return bits >= 4 ? 0.05 : 0.5; }
  /// Where the gptq roundings take each group's scale and zero from.
  GptqOptions::Groups gptq_groups() const {
    return rounding == Rounding::gptq_regroup          ? GptqOptions::Groups::updated
           : rounding == Rounding::gptq_regroup_within ? GptqOptions::Groups::updated_within
                                                       : GptqOptions::Groups::fixed;
  }
  /// The damping the gptq roundings use at `bits`.
  double damp_for(int bits) const { return gptq_damp ? *gptq_damp : default_gptq_damp(bits); }

  /// llm-awq's semantics: the golden tests hold bit for bit.
  static SearchMode reference() { return {}; }
  /// The variants that win on text the search never saw (bench/RESULTS.md): sequential
  /// calibration and GPTQ rounding with each group's grid recomputed within the range its weights
  /// had (fixed grids cap what the feedback can fix; unbounded ones lose the clip search's bounds
  /// where outlier channels dominate a group), its target a quarter of the way to the
  /// full-precision model's output. α refinement does not win, so it is left out.
  static SearchMode improved() { return {true, 0, Rounding::gptq_regroup_within, std::nullopt, kFpTarget}; }

  /// The preset names, for command lines and reports.
  static const char* names() {
    return "reference, improved (sequential+gptq-regroup-within+fp-target), sequential, refine, gptq, gptq-regroup, gptq-regroup-within, "
           "fp-target (with sequential and a gptq rounding), or several joined by '+' (improved+refine)";
  }
  /// \brief The preset called `name`: "reference", "improved", one variant alone ("sequential",
  ///        "refine", "gptq", "gptq-regroup", "gptq-regroup-within", "fp-target"), or several joined
  ///        by '+', which combines them.
  /// \throws awq::Error naming the value and the accepted names, two roundings joined, or
  ///         fp-target without sequential calibration and a gptq rounding.
  static SearchMode parse(const std::string& name) {
    const auto bad = [&] { return Error("awq::model::SearchMode: '" + name + "' is not a search mode (accepted: " + names() + ")"); };
    SearchMode m;
    std::size_t b = 0;
    do {
      const std::size_t e = std::min(name.find('+', b), name.size());
      const std::string part = name.substr(b, e - b);
      SearchMode p;
      if (part == "reference") p = reference();
      else if (part == "improved") p = improved();
      else if (part == "sequential") p.sequential = true;
      else if (part == "refine") p.alpha_refine = kRefineSteps;
      else if (part == "fp-target") p.fp_target = kFpTarget;
      else {
        const auto* r = std::find_if(std::begin(kRoundings), std::end(kRoundings), [&](const auto& kv) { return part == kv.first; });
        if (r == std::end(kRoundings)) throw bad();
        p.rounding = r->second;
      }
      if (p.rounding != Rounding::nearest && m.rounding != Rounding::nearest && p.rounding != m.rounding)
        throw Error("awq::model::SearchMode: '" + name + "' joins two roundings");
      m.sequential = m.sequential || p.sequential;
      m.alpha_refine = std::max(m.alpha_refine, p.alpha_refine);
      if (p.rounding != Rounding::nearest) m.rounding = p.rounding;
      m.fp_target = std::max(m.fp_target, p.fp_target);
      b = e + 1;
    } while (b <= name.size());
    if (m.fp_target > 0 && !m.retargets())
      throw Error("awq::model::SearchMode: '" + name + "' asks for fp-target without sequential calibration and a gptq rounding (e.g. sequential+gptq+fp-target)");
    return m;
  }
  /// The variants this mode combines, by their names joined with '+' in a fixed order
  /// ("sequential+gptq-regroup-within+fp-target" for improved(), "reference" for the reference; the damping
  /// is not part of it): what a run's identity records, so that a preset whose meaning changes
  /// does not resume another's results.
  std::string variants() const {
    if (is_reference()) return "reference";
    std::string n = sequential ? "sequential" : "";
    const auto add = [&n](const std::string& v) { n += (n.empty() ? "" : "+") + v; };
    if (alpha_refine > 0) add(alpha_refine == kRefineSteps ? "refine" : "refine" + std::to_string(alpha_refine));
    for (const auto& [name, r] : kRoundings)
      if (rounding == r) add(name);
    if (fp_target > 0) add(fp_target == kFpTarget ? std::string("fp-target") : "fp-target" + std::to_string(fp_target));
    return n;
  }
  /// Whether this is the reference.
  bool is_reference() const { return !sequential && alpha_refine == 0 && rounding == Rounding::nearest && fp_target == 0; }
  /// Whether GPTQ's target moves towards the full-precision model (fp_target): only where both
  /// streams exist (sequential) and a gptq rounding has a target.
  bool retargets() const { return fp_target > 0 && sequential && rounding != Rounding::nearest; }
};

}  // namespace awq::model
