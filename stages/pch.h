// Precompiled header for every target that uses LibTorch: parsing these once saves ~15 s per file.
#pragma once
#include <torch/nn.h>
#include <torch/optim.h>
#include <torch/serialize.h>
#include <torch/types.h>
