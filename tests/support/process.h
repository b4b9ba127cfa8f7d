// Test support: child processes the tests start, kill and reap by PID, and
// log files they poll with deadlines. POSIX only; header-only.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace saga::testing {

/// A child process with stdout and stderr appended to a log file. Killed with
/// SIGKILL and reaped when destroyed while still running. Not thread-safe.
class Process {
 public:
  /// Starts argv[0] with `argv`, extra environment `env`, output to `log`.
  Process(const std::vector<std::string>& argv, const std::string& log,
          const std::map<std::string, std::string>& env = {}) {
    std::fflush(nullptr);  // or the child would flush our buffered output too
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      if (!std::freopen(log.c_str(), "a", stdout)) _exit(126);
      dup2(fileno(stdout), fileno(stderr));
      for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() {
    if (running()) kill_now();
  }

  pid_t pid() const { return pid_; }

  /// True until the process has exited (reaps it when it has).
  bool running() {
    if (exited_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) record(status);
    return !exited_;
  }

  /// Waits up to `limit` for the exit; returns the exit code (128 + signal for
  /// a signal), or -1 after killing it on timeout.
  int wait(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (running()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        kill_now();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling with a deadline
    }
    return code_;
  }

  /// SIGKILL, then reap. Returns the status code (137 when it was killed).
  int kill_now() {
    if (!running()) return code_;
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    record(status);
    return code_;
  }

  /// SIGSTOP: the process stays, frozen (a paused VM, a long GC), until resume().
  void pause() {
    if (running()) ::kill(pid_, SIGSTOP);
  }
  /// SIGCONT after pause().
  void resume() {
    if (running()) ::kill(pid_, SIGCONT);
  }

  /// SIGTERM, then wait up to `limit` (SIGKILL after that).
  int terminate(std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    if (!running()) return code_;
    ::kill(pid_, SIGTERM);
    return wait(limit);
  }

 private:
  void record(int status) {
    exited_ = true;
    code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  pid_t pid_ = -1;
  bool exited_ = false;
  int code_ = -1;
};

/// The whole content of a file ("" when missing).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Waits up to `limit` until `path` contains `needle`.
inline bool wait_for_text(const std::string& path, const std::string& needle,
                          std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (read_file(path).find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling with a deadline
  }
  return true;
}

/// What a command did: its exit code (-1 when it did not exit) and its output.
struct CommandResult {
  int code = -1;
  std::string out;
};

/// Runs `command` (a shell line) to completion, whatever it exits with; with
/// `with_stderr`, its stderr is part of `out`.
inline CommandResult run_capturing(const std::string& command, bool with_stderr = true) {
  std::fflush(nullptr);
  FILE* p = popen((with_stderr ? command + " 2>&1" : command).c_str(), "r");
  if (!p) throw std::runtime_error("cannot run: " + command);
  CommandResult r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

/// Runs a command to completion and returns its stdout; throws when it fails.
inline std::string run_command(const std::string& command) {
  CommandResult r = run_capturing(command, /*with_stderr=*/false);
  if (r.code != 0)
    throw std::runtime_error("command failed (" + std::to_string(r.code) + "): " + command);
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == ' ')) r.out.pop_back();
  return std::move(r.out);
}

}  // namespace saga::testing
