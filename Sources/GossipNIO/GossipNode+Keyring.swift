import Gossip
import Keyring
import NIOCore

extension GossipNode {
    /// Applies a keyring operation on this node and persists the result (loop-confined).
    func applyKeyring(_ op: KeyringOperation) -> KeyringReply {
        var ring = keyring
        var failure: String?
        if !ring.isEncrypted {
            failure = "encryption is not enabled on this agent (start it with --encrypt or --keyring-file)"
        } else {
            do throws(KeyringError) {
                switch op {
                case .list: break
                case .install(let k): try ring.install(k)
                case .use(let k): try ring.use(k)
                case .remove(let k): try ring.remove(k)
                }
            } catch {
                failure = error.message
            }
        }
        if failure == nil && ring != keyring {
            if let path = keyringPath {
                do {
                    try KeyringFile.save(ring, path: path)
                } catch {
                    return KeyringReply(node: name, error: error.message, primaryKeyID: keyring.primary?.idString,
                                        keyIDs: keyring.keys.map(\.idString))
                }
            }
            keyring = ring
            logger.info("keyring changed", metadata: ["operation": "\(op.verb)", "key": "\(op.key?.idString ?? "-")",
                                                      "primary": "\(ring.primary?.idString ?? "-")"])
        }
        return KeyringReply(node: name, error: failure, primaryKeyID: keyring.primary?.idString,
                            keyIDs: keyring.keys.map(\.idString))
    }

    /// Runs a keyring operation on every live member and aggregates the answers, like `serf keys`.
    ///
    /// Remote members are asked first, with frames sealed by the current primary key; this node
    /// applies the operation last, so a `use` never leaves it unable to reach the others.
    public func keyringOperation(_ op: KeyringOperation, timeout: Duration = .seconds(5)) async -> KeyringReport {
        let targets: [Member] = (try? await loop.submit {
            self.core.members.filter { $0.name != self.name && ($0.status == .alive || $0.status == .suspect) }
        }.get()) ?? []
        let payload = op.encode()
        var replies: [KeyringReply] = []
        var unreachable: [String] = []
        await withTaskGroup(of: (String, KeyringReply?).self) { group in
            for m in targets {
                group.addTask {
                    let frame = try? await self.loop.flatSubmit {
                        self.request(payload, to: m.address, expectReply: true, timeout: timeout)
                    }.get()
                    guard let frame, let opened = try? await self.loop.submit({ self.keyring.open(frame) }).get(),
                          case .success(let bytes) = opened, bytes.first == StreamKind.keyringReply.rawValue,
                          let reply = KeyringReply.decode(bytes.dropFirst()) else {
                        return (m.name, nil)
                    }
                    return (m.name, reply)
                }
            }
            for await (name, reply) in group {
                if let reply { replies.append(reply) } else { unreachable.append(name) }
            }
        }
        let mine = (try? await loop.submit { self.applyKeyring(op) }.get())
            ?? KeyringReply(node: name, error: "agent is shutting down", primaryKeyID: nil, keyIDs: [])
        replies.append(mine)
        replies.sort { $0.node < $1.node }
        return KeyringReport(operation: op.verb, asked: targets.count + 1, replies: replies, unreachable: unreachable.sorted())
    }

    /// This node's own keyring, by key identifier (never the keys).
    public func localKeyring() async -> KeyringReply {
        (try? await loop.submit { self.applyKeyring(.list) }.get())
            ?? KeyringReply(node: name, error: "agent is shutting down", primaryKeyID: nil, keyIDs: [])
    }
}
