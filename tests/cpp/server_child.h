// In a forked child about to exec a server the test owns (redis-server, a
// sentinel): the server dies with the test process, and holds none of the
// test's output pipes. A test that aborts (a sanitizer finding, a failed
// assertion in a fixture) then leaves no server behind, and ctest, which
// reads the test's output until every holder closes it, does not wait on an
// orphan.
#ifndef APPROUTE_TESTS_CPP_SERVER_CHILD_H_
#define APPROUTE_TESTS_CPP_SERVER_CHILD_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

namespace approute::testing {

inline void PrepareServerChild() {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(devnull, STDERR_FILENO);
    if (devnull > STDERR_FILENO) close(devnull);
  }
}

}  // namespace approute::testing

#endif  // APPROUTE_TESTS_CPP_SERVER_CHILD_H_
