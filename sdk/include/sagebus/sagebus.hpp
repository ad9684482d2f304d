// The whole sage-bus SDK: include this, link SageBus::sagebus.
#pragma once

#include "sagebus/call_context.hpp"
#include "sagebus/client.hpp"
#include "sagebus/legacy_queue.hpp"
#include "sagebus/service.hpp"
#include "sagebus/status.hpp"
#include "sagebus/stream.hpp"
#include "sagebus/subscription.hpp"
