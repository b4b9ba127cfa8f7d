#include "saga/definition.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace saga {

Duration RetryPolicy::backoff(uint32_t retry, RandomSource& random) const {
  if (retry == 0) retry = 1;
  double base = static_cast<double>(initial_backoff.count()) *
                std::pow(multiplier, static_cast<double>(retry - 1));
  base = std::min(base, static_cast<double>(max_backoff.count()));
  const double j = std::clamp(jitter, 0.0, 1.0);
  const double factor = 1.0 - j + 2.0 * j * random.uniform();
  return Duration(std::max<int64_t>(0, std::llround(base * factor)));
}

std::vector<std::string> SagaDefinition::participants() const {
  std::set<std::string> names;
  for (const StepSpec& s : steps_) {
    if (!s.action.is_local()) names.insert(s.action.participant);
    if (s.compensation && !s.compensation->is_local()) names.insert(s.compensation->participant);
  }
  return {names.begin(), names.end()};
}

DefinitionBuilder::DefinitionBuilder(std::string name, uint32_t version)
    : def_(std::make_shared<SagaDefinition>()) {
  def_->name_ = std::move(name);
  def_->version_ = version;
}

StepSpec& DefinitionBuilder::current() {
  if (def_->steps_.empty()) {
    // Keep building so that build() can report every mistake at once.
    errors_.push_back("a step option was set before any step was declared");
    def_->steps_.emplace_back();
  }
  return def_->steps_.back();
}

DefinitionBuilder& DefinitionBuilder::command(std::string step, std::string participant,
                                              std::string command) {
  StepSpec s;
  s.name = std::move(step);
  s.action.participant = std::move(participant);
  s.action.command = std::move(command);
  if (s.action.participant.empty()) errors_.push_back("step '" + s.name + "' has no participant");
  if (s.action.command.empty()) errors_.push_back("step '" + s.name + "' has no command name");
  def_->steps_.push_back(std::move(s));
  return *this;
}

DefinitionBuilder& DefinitionBuilder::local(std::string step, LocalFn fn) {
  StepSpec s;
  s.name = std::move(step);
  if (!fn) errors_.push_back("local step '" + s.name + "' has no function");
  s.action.local = std::move(fn);
  s.action.command = s.name;
  def_->steps_.push_back(std::move(s));
  return *this;
}

DefinitionBuilder& DefinitionBuilder::compensate(std::string participant, std::string command,
                                                 PayloadFn payload) {
  StepSpec& s = current();
  Action a;
  a.participant = std::move(participant);
  a.command = std::move(command);
  a.payload = std::move(payload);
  a.key = s.action.key;
  if (a.participant.empty() || a.command.empty()) {
    errors_.push_back("compensation of step '" + s.name + "' needs a participant and a command");
  }
  // The participant's inbox is what tells an undo from an undo of nothing
  // (and voids an action overtaken by its compensation), so both must go to
  // the same participant.
  if (!s.action.is_local() && a.participant != s.action.participant) {
    errors_.push_back("compensation of step '" + s.name + "' goes to '" + a.participant +
                      "' but the action goes to '" + s.action.participant +
                      "': they must be the same participant");
  }
  s.compensation = std::move(a);
  return *this;
}

DefinitionBuilder& DefinitionBuilder::compensate_local(LocalFn fn) {
  StepSpec& s = current();
  if (!fn) errors_.push_back("local compensation of step '" + s.name + "' has no function");
  Action a;
  a.local = std::move(fn);
  a.command = s.name + ".compensate";
  s.compensation = std::move(a);
  return *this;
}

DefinitionBuilder& DefinitionBuilder::payload(PayloadFn fn) {
  current().action.payload = std::move(fn);
  return *this;
}

DefinitionBuilder& DefinitionBuilder::on_reply(MergeFn fn) {
  current().action.on_reply = std::move(fn);
  return *this;
}

DefinitionBuilder& DefinitionBuilder::key(std::function<std::string(const Json&)> fn) {
  StepSpec& s = current();
  s.action.key = fn;
  if (s.compensation && !s.compensation->is_local()) s.compensation->key = std::move(fn);
  return *this;
}

DefinitionBuilder& DefinitionBuilder::timeout(Duration d) {
  if (d.count() <= 0)
    errors_.push_back("timeout of step '" + current().name + "' must be positive");
  current().timeout = d;
  return *this;
}

DefinitionBuilder& DefinitionBuilder::retry(RetryPolicy policy) {
  current().retry = policy;
  return *this;
}

DefinitionBuilder& DefinitionBuilder::compensation_retry(RetryPolicy policy) {
  current().compensation_retry = policy;
  return *this;
}

DefinitionBuilder& DefinitionBuilder::on_state_change(EventsFn fn) {
  def_->events_ = std::move(fn);
  return *this;
}

DefinitionBuilder& DefinitionBuilder::records(RecordsFn fn) {
  def_->records_ = std::move(fn);
  return *this;
}

DefinitionBuilder& DefinitionBuilder::pivot() {
  current().pivot = true;
  return *this;
}

namespace {

std::string describe(const Action& a) {
  return a.is_local() ? "local" : a.participant + "." + a.command;
}

std::vector<std::string> shape_of(const std::vector<StepSpec>& steps) {
  std::vector<std::string> shape;
  shape.reserve(steps.size());
  for (const StepSpec& s : steps) {
    std::string line = s.name + ": " + describe(s.action);
    if (s.compensation) line += ", compensation " + describe(*s.compensation);
    if (s.pivot) line += ", pivot";
    shape.push_back(std::move(line));
  }
  return shape;
}

// FNV-1a over the lines, each ended by a newline (step names hold none that
// matter: a name with one only makes another shape). 0 is kept for "none".
uint64_t fingerprint_of(const std::vector<std::string>& shape) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 0x100000001b3ULL;
  };
  for (const std::string& line : shape) {
    for (unsigned char c : line) mix(c);
    mix('\n');
  }
  return h == 0 ? 1 : h;
}

}  // namespace

std::string first_difference(const std::vector<std::string>& was,
                             const std::vector<std::string>& now) {
  const size_t n = std::max(was.size(), now.size());
  for (size_t i = 0; i < n; ++i) {
    if (i < was.size() && i < now.size() && was[i] == now[i]) continue;
    const std::string step = "step " + std::to_string(i + 1) + ": ";
    if (i >= now.size()) return step + "was '" + was[i] + "', now no such step";
    if (i >= was.size()) return step + "was no such step, now '" + now[i] + "'";
    return step + "was '" + was[i] + "', now '" + now[i] + "'";
  }
  return {};
}

StatusOr<DefinitionPtr> DefinitionBuilder::build() {
  std::vector<std::string> errors = errors_;
  if (def_->name_.empty()) errors.push_back("the saga type has no name");
  if (def_->version_ == 0) errors.push_back("versions start at 1");
  if (def_->steps_.empty()) errors.push_back("a saga needs at least one step");
  std::set<std::string> names;
  def_->pivot_.reset();
  for (size_t i = 0; i < def_->steps_.size(); ++i) {
    const StepSpec& s = def_->steps_[i];
    if (s.name.empty()) errors.push_back("step " + std::to_string(i) + " has no name");
    if (!names.insert(s.name).second) errors.push_back("step name '" + s.name + "' repeats");
    if (s.pivot) {
      if (def_->pivot_) errors.push_back("more than one pivot step");
      def_->pivot_ = i;
    }
    if (s.retry.multiplier < 1.0 || s.compensation_retry.multiplier < 1.0) {
      errors.push_back("retry multiplier of step '" + s.name + "' must be >= 1");
    }
  }
  if (def_->pivot_) {  // the point of no return: undoable before it, not undoable itself
    const StepSpec& pivot = def_->steps_[*def_->pivot_];
    if (pivot.compensation) {
      errors.push_back("the pivot step '" + pivot.name +
                       "' has a compensation: a pivot is never undone (move the compensation to "
                       "a step before it, or the pivot to a later step)");
    }
    for (size_t i = 0; i < *def_->pivot_; ++i) {
      if (!def_->steps_[i].compensation) {
        errors.push_back("step '" + def_->steps_[i].name + "' comes before the pivot '" +
                         pivot.name + "' and has no compensation: a saga that stops before the "
                         "pivot must be able to undo it");
      }
    }
  }
  if (!errors.empty()) {
    std::string msg =
        "saga definition '" + def_->name_ + "' v" + std::to_string(def_->version_) + ": ";
    for (size_t i = 0; i < errors.size(); ++i) msg += (i ? "; " : "") + errors[i];
    return Status::invalid_argument(std::move(msg));
  }
  def_->shape_ = shape_of(def_->steps_);
  def_->fingerprint_ = fingerprint_of(def_->shape_);
  DefinitionPtr out = def_;
  def_ = std::make_shared<SagaDefinition>(*def_);  // the builder may go on without touching `out`
  return out;
}

}  // namespace saga
