/// \file
/// \brief The activation-aware search on the CPU: statistics, scale search, clip search, folding.
#pragma once

#include "awq/backend/cpu.hpp"
#include "awq/progress.hpp"
#include "awq/search/clip.hpp"
#include "awq/search/fold.hpp"
#include "awq/search/scale.hpp"
#include "awq/stats.hpp"
