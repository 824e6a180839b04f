// Names and parsers of the public enums (approute/types.h).
#include "approute/types.h"

#include "util/str_util.h"

namespace approute {

std::string_view AdminStateName(AdminState s) {
  switch (s) {
    case AdminState::kActive:
      return "active";
    case AdminState::kDraining:
      return "draining";
    case AdminState::kDisabled:
      return "disabled";
  }
  return "unknown";
}

std::string_view HealthName(Health h) {
  switch (h) {
    case Health::kUp:
      return "up";
    case Health::kSuspect:
      return "suspect";
    case Health::kDown:
      return "down";
  }
  return "unknown";
}

absl::StatusOr<AdminState> ParseAdminState(std::string_view s) {
  if (s == "active") return AdminState::kActive;
  if (s == "draining") return AdminState::kDraining;
  if (s == "disabled") return AdminState::kDisabled;
  return absl::InvalidArgumentError(
      internal::Cat("unknown admin state \"", s, "\" (expected active, draining or disabled)"));
}

absl::StatusOr<Health> ParseHealth(std::string_view s) {
  if (s == "up") return Health::kUp;
  if (s == "suspect") return Health::kSuspect;
  if (s == "down") return Health::kDown;
  return absl::InvalidArgumentError(internal::Cat("unknown health \"", s, "\" (expected up, suspect or down)"));
}

}  // namespace approute
