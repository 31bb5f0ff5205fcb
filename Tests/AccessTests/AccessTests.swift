import Access
import Primitives
import Testing

/// The ACL core: rules, identities, commands and their encoding.
@Suite struct AccessTests {
    static let hashA = [UInt8](repeating: 0xA1, count: 32)
    static let hashB = [UInt8](repeating: 0xB2, count: 32)

    static func team() -> Policy {
        Policy(name: "team", namespaces: ["default": NamespaceRule(capabilities: [.readJob, .submitJob]),
                                          "team-*": NamespaceRule(capabilities: [.readJob]),
                                          "team-secret": NamespaceRule(deny: true)],
               scopes: [.node: .read], variables: ["": .read, "app/": .write, "app/secret/": .deny])
    }

    static func bootstrapped() -> ACLState {
        var s = ACLState()
        #expect(s.apply(.bootstrap(Token(accessor: "root", secretHash: hashA, name: "b", kind: .client, policies: [], createTime: 1)), index: 1) == .applied)
        #expect(s.apply(.upsertPolicy(team()), index: 2) == .applied)
        #expect(s.apply(.upsertToken(Token(accessor: "dev", secretHash: hashB, name: "d", kind: .client, policies: ["team"], createTime: 2,
                                           expiryTime: 1_000)), index: 3) == .applied)
        return s
    }

    @Test func offUntilBootstrappedThenDenyByDefault() {
        #expect(ACLState().identity(secretHash: nil, now: 0)?.who == .unrestricted)
        let s = Self.bootstrapped()
        // The bootstrap token is management whatever it asked to be.
        #expect(s.identity(secretHash: Self.hashA, now: 0)?.isManagement == true)
        let anonymous = s.identity(secretHash: nil, now: 0)!
        #expect(anonymous.who == .anonymous && !anonymous.allows(.namespace("default", .readJob)) && anonymous.allows(.open))
        #expect(!anonymous.allows(.anyToken))
        #expect(s.identity(secretHash: [UInt8](repeating: 7, count: 32), now: 0) == nil, "unknown token")
        var again = s
        #expect(again.apply(.bootstrap(Token(accessor: "x", secretHash: [UInt8](repeating: 9, count: 32), name: "", kind: .management,
                                             policies: [], createTime: 0)), index: 9)
                == .rejected(code: "already_bootstrapped", message: "ACLs were bootstrapped already; use a management token to make more tokens"))
    }

    @Test func rulesPickTheMostSpecificMatchAndDenyWins() {
        let s = Self.bootstrapped()
        let dev = s.identity(secretHash: Self.hashB, now: 10)!
        #expect(dev.allows(.namespace("default", .submitJob)))
        #expect(!dev.allows(.namespace("default", .allocExec)))
        #expect(dev.allows(.namespace("team-a", .readJob)) && !dev.allows(.namespace("team-a", .submitJob)))
        #expect(!dev.allows(.namespace("team-secret", .readJob)), "an exact key wins over the glob")
        #expect(!dev.allows(.namespace("prod", .readJob)))
        #expect(dev.allows(.scope(.node, .read)) && !dev.allows(.scope(.node, .write)) && !dev.allows(.scope(.keyring, .read)))
        #expect(dev.variableLevel("other") == .read && dev.variableLevel("app/x") == .write && dev.variableLevel("app/secret/k") == .deny)
        #expect(!dev.allows(.variable("app/secret/k", .read)))
        #expect(!dev.allows(.management) && dev.allows(.anyToken))
        // Expired at its expiry time.
        #expect(s.identity(secretHash: Self.hashB, now: 1_000) == nil)
    }

    @Test func anotherPolicysDenyWinsOverAGrant() {
        var s = Self.bootstrapped()
        _ = s.apply(.upsertPolicy(Policy(name: "no-nodes", scopes: [.node: .deny], variables: ["app/": .deny])), index: 4)
        _ = s.apply(.upsertToken(Token(accessor: "dev", secretHash: Self.hashB, name: "d", kind: .client, policies: ["team", "no-nodes"],
                                       createTime: 2)), index: 5)
        let dev = s.identity(secretHash: Self.hashB, now: 10)!
        #expect(!dev.allows(.scope(.node, .read)) && !dev.allows(.variable("app/x", .read)))
        #expect(s.tokens["dev"]?.createIndex == 3 && s.tokens["dev"]?.modifyIndex == 5, "an update keeps the creation")
    }

    @Test func theAnonymousPolicyAppliesToCallsWithoutAToken() {
        var s = Self.bootstrapped()
        _ = s.apply(.upsertPolicy(Policy(name: "anonymous", namespaces: ["*": NamespaceRule(capabilities: [.readJob])])), index: 4)
        let anonymous = s.identity(secretHash: nil, now: 0)!
        #expect(anonymous.allows(.namespace("anything", .readJob)) && !anonymous.allows(.namespace("default", .submitJob)))
    }

    @Test func deletesAndMissingThings() {
        var s = Self.bootstrapped()
        #expect(s.apply(.deleteToken("dev"), index: 4) == .applied)
        #expect(s.identity(secretHash: Self.hashB, now: 0) == nil, "a deleted token's secret is gone")
        #expect(s.apply(.deleteToken("dev"), index: 5) == .rejected(code: "token_not_found", message: "no ACL token dev"))
        #expect(s.apply(.deletePolicy("nope"), index: 6) == .rejected(code: "policy_not_found", message: "no ACL policy nope"))
        // A token whose policy was deleted keeps nothing of it.
        _ = s.apply(.upsertToken(Token(accessor: "t2", secretHash: Self.hashB, name: "", kind: .client, policies: ["team"], createTime: 0)), index: 7)
        _ = s.apply(.deletePolicy("team"), index: 8)
        #expect(s.identity(secretHash: Self.hashB, now: 0)?.allows(.namespace("default", .readJob)) == false)
    }

    @Test func stateCommandsAndQueriesRoundTrip() {
        let s = Self.bootstrapped()
        #expect(ACLState.decode(s.encode()) == s)
        #expect(ACLState.decode(ACLState().encode()) == ACLState())
        let sub = s.subset(secretHash: Self.hashB)
        #expect(sub.tokens.count == 1 && sub.policies.keys.sorted() == ["team"] && sub.bootstrapped)
        #expect(sub.identity(secretHash: Self.hashB, now: 0)?.allows(.namespace("default", .submitJob)) == true)
        for c in [ACLCommand.bootstrap(s.tokens["root"]!), .upsertPolicy(Self.team()), .deletePolicy("team"), .upsertToken(s.tokens["dev"]!),
                  .deleteToken("dev")] {
            #expect(ACLCommand.decode(c.encode()) == c)
        }
        for q in [ACLQuery.all, .resolve(secretHash: nil), .resolve(secretHash: Self.hashA)] { #expect(ACLQuery.decode(q.encode()) == q) }
        // Damaged bytes decode to nil, never trap.
        let bytes = s.encode()
        for cut in 0..<bytes.count { #expect(ACLState.decode(Array(bytes.prefix(cut))) == nil) }
        var flipped = bytes
        for i in stride(from: 0, to: flipped.count, by: 3) { flipped[i] ^= 0x5A; _ = ACLState.decode(flipped); flipped[i] ^= 0x5A }
    }
}
