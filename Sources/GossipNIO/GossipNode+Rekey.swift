import Gossip
import Keyring
import NIOCore

/// Frames of the missed-rotation recovery, sent outside the cluster seal (the asker lacks the key).
enum RekeyFrame {
    static let request: UInt8 = 0x10
    static let reply: UInt8 = 0x11

    static func name(_ s: String) -> [UInt8] {
        let u = Array(s.utf8.prefix(255))
        return [UInt8(u.count)] + u
    }

    /// Splits `[len][name][rest]`.
    static func split(_ b: [UInt8]) -> (String, [UInt8])? {
        guard let n = b.first.map(Int.init), b.count >= 1 + n,
              let name = String(validating: b[1..<1 + n], as: UTF8.self) else { return nil }
        return (name, Array(b[(1 + n)...]))
    }
}

extension GossipNode {
    /// Remembers members' identity keys (loop-confined).
    func remember(_ e: Event) {
        switch e {
        case .memberJoined(let m), .memberUpdated(let m), .memberRecovered(let m):
            if let id = MetadataEnvelope.unwrap(m.metadata).identity {
                peers.record(name: m.name, address: m.address, identity: id)
            }
        case .memberLeft(let m):
            peers.forget(m.name)
        case .memberReaped(let n):
            peers.forget(n)
        case .joinFailed:
            for a in joinAddresses { requestRekey(from: a) }
        default:
            break
        }
    }

    /// Asks a member for the current keyring, proving who we are with our identity key.
    ///
    /// At most one attempt per address every 5 s. The answer is accepted only when it is boxed by
    /// a member whose identity key we already know, so nobody can feed us a keyring of their own.
    func requestRekey(from peer: Address) {
        guard let identity, keyring.isEncrypted else { return }
        let nowDeadline = NIODeadline.now()
        if let last = lastRekeyAttempt[peer], nowDeadline - last < .seconds(5) { return }
        lastRekeyAttempt[peer] = nowDeadline
        let target = Address(host: peer.host, port: peer.port)
        let frame = [Keyring.magic, RekeyFrame.request] + RekeyFrame.name(name) + identity.publicKey
        request(frame, to: target, expectReply: true, timeout: .seconds(3), raw: true).whenSuccess { reply in
            guard let reply, reply.count > 2, reply[0] == Keyring.magic, reply[1] == RekeyFrame.reply,
                  let (responder, boxed) = RekeyFrame.split(Array(reply.dropFirst(2))),
                  let responderKey = self.peers.identity(of: responder),
                  let bytes = identity.unbox(boxed, from: responderKey),
                  let ring = Keyring.imported(bytes) else {
                self.drop("rekey_refused", from: "\(peer)")
                return
            }
            guard ring != self.keyring else { return }
            if let path = self.keyringPath {
                do { try KeyringFile.save(ring, path: path) } catch {
                    self.logger.error("cannot persist the recovered keyring", metadata: ["error": "\(error)"])
                    return
                }
            }
            self.keyring = ring
            self.logger.notice("keyring recovered after a missed rotation",
                               metadata: ["from": "\(responder)", "primary": "\(ring.primary?.idString ?? "-")",
                                          "keys": "\(ring.keys.map(\.idString).joined(separator: ","))"])
            // Retry the join at once with the keys we now hold.
            if self.core.isJoining || !self.joinAddresses.isEmpty {
                self.carry(self.core.join(self.joinAddresses.isEmpty ? [peer] : self.joinAddresses, now: self.now))
            }
        }
    }

    /// Answers a rekey request from a member whose identity key matches what we know of it.
    func answerRekey(_ body: [UInt8], from remote: String) -> [UInt8]? {
        guard let identity, keyring.isEncrypted, let (asker, key) = RekeyFrame.split(body), key.count == 32 else {
            drop("rekey_malformed", from: remote)
            return nil
        }
        // A bounded number of answers per 10 s: requests are unauthenticated until we check them.
        let nowDeadline = NIODeadline.now()
        rekeyReplies.removeAll { nowDeadline - $0 > .seconds(10) }
        guard rekeyReplies.count < 20 else {
            drop("rekey_rate_limited", from: remote)
            return nil
        }
        let known = core.member(named: asker).flatMap { MetadataEnvelope.unwrap($0.metadata).identity } ?? peers.identity(of: asker)
        guard asker != name, let known, known == key, let boxed = identity.box(keyring.exported(), to: key) else {
            drop("rekey_unknown_member", from: remote)
            return nil
        }
        rekeyReplies.append(nowDeadline)
        logger.info("sent the current keyring to a member that missed a rotation", metadata: ["member": "\(asker)"])
        return [Keyring.magic, RekeyFrame.reply] + RekeyFrame.name(name) + boxed
    }
}
