// Fuzz target: one raw HTTP/1.1 request, read by Beast's parser with the
// server's header and body limits, turned into a Request as HttpServer does
// (beast_request.h) and routed through the inventory service's router (its
// routes and the standard probes) over a participant on a MemoryBus: the whole
// request path of a reference service without a socket. Every answer must be
// a valid status, and a problem must be JSON.
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "beast_request.h"
#include "message_access.h"
#include "saga/clock.h"
#include "saga/inventory/inventory.h"
#include "saga/json.h"
#include "saga/memory_transport.h"
#include "saga/participant.h"
#include "saga/service/http_server.h"
#include "saga/service/identity.h"
#include "saga/service/router.h"

namespace {

namespace http = boost::beast::http;
using namespace saga;

struct Service {
  std::filesystem::path dir;
  std::shared_ptr<MemoryBus> bus;
  std::unique_ptr<Participant> participant;
  service::Router router;

  Service() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "saga-fuzz-http-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) std::abort();
    dir = tmpl;
    bus = MemoryBus::create(std::make_shared<ManualClock>(), 1);
    ParticipantOptions o;
    o.name = inventory::kParticipantName;
    o.data_dir = dir.string();
    o.sync = false;
    auto opened =
        Participant::open(o, std::shared_ptr<Transport>(bus->connect(inventory::kParticipantName)));
    if (!opened.ok()) std::abort();
    participant = std::move(*opened);
    if (!inventory::register_handlers(*participant).ok()) std::abort();
    inventory::add_routes(router, *participant);  // with /healthz, /readyz, /metrics
    // Inputs without identity headers act as an admin, so that the seeds still reach the
    // handlers' parsing; inputs with X-Saga-Subject/Roles exercise the identity checks.
    service::set_identity_required(false);
  }
  ~Service() {
    participant->stop();
    participant.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

Service& the_service() {
  static Service s;
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Service& s = the_service();
  const service::ServerOptions limits;
  http::request_parser<http::string_body> parser;
  parser.header_limit(static_cast<uint32_t>(limits.header_limit));
  parser.body_limit(limits.body_limit);
  parser.eager(true);
  boost::beast::error_code ec;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  while (!parser.is_done() && !rest.empty()) {
    const size_t used = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
    if (ec || used == 0) break;
    rest.remove_prefix(used);
  }
  if (!parser.is_done()) return 0;  // the server answers these itself (400, 413, 431)

  service::Request req = service::internal::request_from_beast(parser.get());
  service::Response res = s.router.handle(req);
  service::internal::MessageAccess::finalize(res, req);
  if (res.status() < 100 || res.status() > 599) std::abort();
  if (res.status() >= 400 && !parse_json(res.body()).ok()) std::abort();
  return 0;
}
