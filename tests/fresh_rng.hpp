// Test support: a generator seeded afresh each run, its seed in every failure's report.
#pragma once

#include <random>

#include <doctest/doctest.h>

/// Declares `std::mt19937 NAME` seeded from std::random_device and CAPTUREs the seed (NAME_seed),
/// so a failure can be replayed. A macro: CAPTURE lasts only as long as the scope it is written in.
#define AWQ_TEST_FRESH_RNG(NAME)                        \
  const unsigned NAME##_seed = std::random_device{}(); \
  CAPTURE(NAME##_seed);                                 \
  std::mt19937 NAME(NAME##_seed)
