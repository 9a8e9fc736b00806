// Declarations only: see context.h for why these files exist.
#pragma once
#include "context.h"
