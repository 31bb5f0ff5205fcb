import Access
import Hummingbird
import HummingbirdTesting
import NIOPosix
import Testing
@testable import Agent

/// Quick routes (`AccessRules.quick`) run on their connection's event loop; every other route's
/// handler runs on Swift's shared pool, so a slow one holds up no event loop — not the one that
/// accepts connections either.
@Suite struct EventLoopRoutingTests {
    @Test func everyQuickRouteIsInTheTable() {
        #expect(AccessRules.table.filter(\.onLoop).count == AccessRules.quick.count)
        #expect(AccessRules.rule(method: "PUT", path: "/v1/var/app/x")?.onLoop == true)
        #expect(AccessRules.rule(method: "GET", path: "/v1/vars")?.onLoop == false)
        #expect(AccessRules.rule(method: "POST", path: "/v1/operator/what-if")?.onLoop == false)
    }

    @Test func quickRoutesRunOnTheLoopAndOthersOnTheSharedPool() async throws {
        let router = Router(context: BasicRequestContext.self)
        router.middlewares.add(AccessMiddleware(resolver: TokenResolver(enforceBeforeBootstrap: false) { _, _ in ACLState() }))
        // Both routes are open (no token asked): one quick, one not.
        let whereAmI: @Sendable () -> String = { MultiThreadedEventLoopGroup.currentEventLoop != nil ? "loop" : "pool" }
        router.get("/v1/status/leader") { _, _ in whereAmI() }
        router.post("/v1/acl/bootstrap") { _, _ in whereAmI() }
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let app = Application(router: router, server: Agent.httpServer(tls: nil) { [] },
                              configuration: .init(address: .hostname("127.0.0.1", port: 0)), eventLoopGroupProvider: .shared(loops))
        try await app.test(.live) { client in
            for _ in 0..<3 {
                let quick = try await client.execute(uri: "/v1/status/leader", method: .get) { String(buffer: $0.body) }
                let slow = try await client.execute(uri: "/v1/acl/bootstrap", method: .post) { String(buffer: $0.body) }
                #expect(quick == "loop")
                #expect(slow == "pool")
            }
        }
        try await loops.shutdownGracefully()
    }
}
