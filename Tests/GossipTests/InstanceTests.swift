import Testing
@testable import Gossip

/// One input at a time against one core, pattern-matching the directives.
@Suite struct InstanceTests {
    let me = Address(host: "127.0.0.2", port: 4682)
    let peer = Address(host: "127.0.0.3", port: 4682)

    func node() -> Instance {
        var n = Instance(name: "a", address: me, settings: .lan, seed: 7)
        _ = n.onStreamReply(.fullState([MemberRecord(name: "b", address: peer, status: .alive, incarnation: Incarnation(1), metadata: [])]),
                            from: peer, now: .zero)
        return n
    }

    @Test func aPingForMeIsAcked() {
        var n = node()
        let out = n.onPacket([.ping(seq: 42, target: "a")], from: peer, now: .seconds(1))
        guard case .send(let ms, let to) = out.first else { Issue.record("no reply"); return }
        #expect(to == peer)
        #expect(ms.first == .ack(seq: 42))
    }

    @Test func aPingForSomeoneElseIsIgnored() {
        var n = node()
        #expect(n.onPacket([.ping(seq: 1, target: "zz")], from: peer, now: .zero).isEmpty)
        #expect(n.stats.misdirectedPings == 1)
    }

    @Test func aSuspicionAboutMeIsRefutedWithAHigherIncarnation() {
        var n = node()
        let out = n.onPacket([.suspect(name: "a", incarnation: Incarnation(0), from: "b", refused: false)], from: peer, now: .zero)
        #expect(n.incarnation == Incarnation(1))
        #expect(n.localHealth == 1)  // Lifeguard: refuting raises local health
        #expect(out.contains(.event(.refuted(rumour: .suspect, incarnation: Incarnation(1)))))
    }

    /// A member still suspected at an older incarnation (its refutation was lost while the
    /// network was cut) says it is alive again — at once to the suspecter, and at most once per
    /// probe interval — so the suspicion ends instead of lasting for good.
    @Test func aStaleSuspicionAboutMeIsAnsweredAgain() {
        var n = node()
        _ = n.onPacket([.suspect(name: "a", incarnation: Incarnation(0), from: "b", refused: false)], from: peer, now: .zero)
        #expect(n.incarnation == Incarnation(1))
        let later = Duration.seconds(30)
        let out = n.onPacket([.suspect(name: "a", incarnation: Incarnation(0), from: "b", refused: false)], from: peer, now: later)
        #expect(n.incarnation == Incarnation(1), "no new incarnation for a stale rumour")
        let resent = out.contains { d in
            if case .send(let ms, let to) = d { return to == peer && ms.contains(.alive(name: "a", address: me, incarnation: Incarnation(1), metadata: [])) }
            return false
        }
        #expect(resent, "\(out)")
        // Not again within a probe interval.
        let again = n.onPacket([.suspect(name: "a", incarnation: Incarnation(0), from: "b", refused: false)], from: peer, now: later + .milliseconds(10))
        #expect(!again.contains { if case .send(let ms, _) = $0 { return ms.contains { if case .alive = $0 { return true }; return false } }; return false })
    }

    /// A ping to a suspect carries the suspicion in the pinger's name (not the rumour's first
    /// author), so a suspect that already refuted answers that very member; and a suspect answers
    /// each member still suspecting it, once per interval each.
    @Test func buddyPingsNameThePingerAndEveryStaleSuspecterIsAnswered() {
        var n = node()
        let out = n.onPacket([.suspect(name: "b", incarnation: Incarnation(1), from: "c", refused: false)], from: peer, now: .zero)
        let buddy = out.compactMap { d -> [Message]? in if case .send(let ms, peer) = d { ms } else { nil } }
            .first { $0.contains(where: { if case .ping(_, "b") = $0 { true } else { false } }) }
        #expect(buddy?.contains(.suspect(name: "b", incarnation: Incarnation(1), from: "a", refused: false)) == true, "\(out)")

        var s = node()
        let third = Address(host: "127.0.0.4", port: 4682)
        _ = s.onStreamReply(.fullState([MemberRecord(name: "c", address: third, status: .alive, incarnation: Incarnation(1), metadata: [])]),
                            from: third, now: .zero)
        _ = s.onPacket([.suspect(name: "a", incarnation: Incarnation(0), from: "b", refused: false)], from: peer, now: .zero)
        #expect(s.incarnation == Incarnation(1))
        let alive = Message.alive(name: "a", address: me, incarnation: Incarnation(1), metadata: [])
        func answered(_ out: [Directive], to: Address) -> Bool {
            out.contains { if case .send(let ms, let a) = $0 { a == to && ms.contains(alive) } else { false } }
        }
        let t = Duration.seconds(5)
        #expect(answered(s.onPacket([.suspect(name: "a", incarnation: Incarnation(0), from: "b", refused: false)], from: peer, now: t), to: peer))
        #expect(answered(s.onPacket([.suspect(name: "a", incarnation: Incarnation(0), from: "c", refused: false)], from: third, now: t), to: third))
    }

    @Test func staleIncarnationsAreIgnored() {
        var n = node()
        _ = n.onPacket([.dead(name: "b", incarnation: Incarnation(0), from: "c")], from: peer, now: .zero)
        #expect(n.member(named: "b")?.status == .alive)
        _ = n.onPacket([.dead(name: "b", incarnation: Incarnation(1), from: "c")], from: peer, now: .zero)
        #expect(n.member(named: "b")?.status == .dead)
        // An alive at the same incarnation does not resurrect; a higher one does.
        _ = n.onPacket([.alive(name: "b", address: peer, incarnation: Incarnation(1), metadata: [])], from: peer, now: .zero)
        #expect(n.member(named: "b")?.status == .dead)
        _ = n.onPacket([.alive(name: "b", address: peer, incarnation: Incarnation(2), metadata: [])], from: peer, now: .zero)
        #expect(n.member(named: "b")?.status == .alive)
    }

    @Test func anUnansweredProbeGoesIndirectThenSuspects() {
        var n = node()
        var out = n.onTick(now: .milliseconds(10))
        guard case .send(let ms, let to) = out.first, case .ping(let seq, "b") = ms.first else {
            Issue.record("expected a ping, got \(out)"); return
        }
        #expect(to == peer)
        out = n.onTick(now: .milliseconds(220))
        // Only one other member: no helpers, but the TCP reachability check is asked for.
        #expect(out.contains(.checkReachability(of: "b", at: peer, seq: seq)))
        // The indirect probes and the TCP ping get the indirect window (300 ms) from the direct
        // timeout — not the rest of the probe interval.
        out = n.onTick(now: .milliseconds(500))
        #expect(n.member(named: "b")?.status == .alive)
        out = n.onTick(now: .milliseconds(520))
        #expect(n.member(named: "b")?.status == .suspect)
        #expect(out.contains { if case .event(.memberSuspected(_, by: "a")) = $0 { true } else { false } })
        #expect(n.localHealth == 1)
    }

    @Test func aRefusedConnectionShortensSuspicion() {
        var n = node()
        let out = n.onTick(now: .milliseconds(10))
        guard case .send(let ms, _) = out.first, case .ping(let seq, _) = ms.first else { Issue.record("no ping"); return }
        _ = n.onTick(now: .milliseconds(220))
        _ = n.onReachability(seq: seq, .refused, now: .milliseconds(221))
        #expect(n.member(named: "b")?.status == .suspect)
        _ = n.onTick(now: .milliseconds(221) + Settings.lan.refusedSuspicionTimeout)
        #expect(n.member(named: "b")?.status == .dead)
    }

    @Test func aSuspectThatAnswersTheLastChanceProbeIsSpared() {
        var n = node()
        _ = n.onPacket([.suspect(name: "b", incarnation: Incarnation(1), from: "c", refused: false)], from: peer, now: .zero)
        #expect(n.member(named: "b")?.status == .suspect)
        // b answers every ping but never refutes (its refutation is lost): it must not die.
        var t = Duration.zero
        while t < .seconds(8) {
            t += .milliseconds(10)
            for d in n.onTick(now: t) {
                if case .send(let ms, _) = d, case .ping(let seq, "b") = ms.first {
                    _ = n.onPacket([.ack(seq: seq)], from: peer, now: t + .milliseconds(1))
                }
            }
        }
        #expect(n.member(named: "b")?.status == .suspect)
        // Once it stops answering, the next expiry is final.
        while t < .seconds(40) {
            t += .milliseconds(10)
            _ = n.onTick(now: t)
        }
        #expect(n.member(named: "b")?.status == .dead)
    }

    @Test func aTCPEchoSavesAProbeThatUDPLost() {
        var n = node()
        let out = n.onTick(now: .milliseconds(10))
        guard case .send(let ms, _) = out.first, case .ping(let seq, _) = ms.first else { Issue.record("no ping"); return }
        _ = n.onTick(now: .milliseconds(220))
        _ = n.onReachability(seq: seq, .answered, now: .milliseconds(230))
        _ = n.onTick(now: .seconds(1))
        #expect(n.member(named: "b")?.status == .alive)
        #expect(n.stats.probesSavedByTCP == 1)
    }

    @Test func anAckBeforeTheTimeoutKeepsTheMemberAlive() {
        var n = node()
        let out = n.onTick(now: .milliseconds(10))
        guard case .send(let ms, _) = out.first, case .ping(let seq, _) = ms.first else { Issue.record("no ping"); return }
        _ = n.onPacket([.ack(seq: seq)], from: peer, now: .milliseconds(12))
        _ = n.onTick(now: .seconds(1))
        #expect(n.member(named: "b")?.status == .alive)
        #expect(n.localHealth == 0)
    }

    @Test func aPingReqIsRelayedAndTheAckForwarded() {
        var n = node()
        let third = Address(host: "127.0.0.4", port: 4682)
        var out = n.onPacket([.pingReq(seq: 9, target: "b", address: peer)], from: third, now: .zero)
        guard case .send(let ms, let to) = out.first, case .ping(let relaySeq, "b") = ms.first else { Issue.record("no relay"); return }
        #expect(to == peer)
        out = n.onPacket([.ack(seq: relaySeq)], from: peer, now: .milliseconds(5))
        guard case .send(let fwd, let back) = out.first else { Issue.record("no forward"); return }
        #expect(back == third)
        #expect(fwd.first == .ack(seq: 9))
    }

    @Test func aRelayThatCannotReachTheTargetNacks() {
        var n = node()
        let third = Address(host: "127.0.0.4", port: 4682)
        _ = n.onPacket([.pingReq(seq: 9, target: "b", address: peer)], from: third, now: .zero)
        let out = n.onTick(now: .milliseconds(170))
        #expect(out.contains { if case .send(let ms, third) = $0 { ms.first == .nack(seq: 9) } else { false } })
    }

    @Test func packetsNeverExceedTheBudget() {
        var n = node()
        for i in 0..<200 {
            _ = n.onPacket([.alive(name: "m\(i)", address: Address(host: "10.0.0.\(i % 250)", port: 4682),
                                   incarnation: Incarnation(1), metadata: Array(repeating: 1, count: 100))], from: peer, now: .zero)
        }
        for t in 1...50 {
            for d in n.onTick(now: .milliseconds(10 * t)) {
                if case .send(let ms, _) = d {
                    #expect(Codec.encodePacket(ms).count + Settings.lan.sealOverhead <= Settings.lan.maxPacketSize)
                }
            }
        }
    }

    @Test func deathNoticesGoBeforeMetadataUpdates() {
        var q = BroadcastQueue()
        for i in 0..<30 {
            q.enqueue(.alive(name: "m\(i)", address: Address(host: "h", port: 1), incarnation: Incarnation(2),
                             metadata: Array(repeating: 0, count: 60)), lowPriority: true)
        }
        q.enqueue(.dead(name: "x", incarnation: Incarnation(1), from: "a"))
        let taken = q.take(budget: 100, limit: 4)
        #expect(taken.first == .dead(name: "x", incarnation: Incarnation(1), from: "a"))
    }

    @Test func leavingAnnouncesLeftAndStopsProbing() {
        var n = node()
        let out = n.leave(now: .zero)
        #expect(n.isLeaving)
        #expect(out.contains { if case .send(let ms, _) = $0 { ms.first == .left(name: "a", incarnation: Incarnation(1)) } else { false } })
        // A leaving node does not refute rumours about itself.
        _ = n.onPacket([.dead(name: "a", incarnation: Incarnation(5), from: "b")], from: peer, now: .zero)
        #expect(n.incarnation == Incarnation(1))
    }
}
