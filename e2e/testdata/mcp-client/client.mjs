// An independent MCP client (the official TypeScript SDK) that drives
// `banger mcp` over stdio. It runs a fixed scenario and prints one JSON
// report on stdout; the Go test (e2e/mcp_test.go) judges it. Every call has
// its own timeout, so a hung server fails the run instead of stalling it.
//
//   node client.mjs BANGER_BINARY
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const bin = process.argv[2];
const transport = new StdioClientTransport({ command: bin, args: ["mcp"], env: process.env, stderr: "inherit" });
const client = new Client({ name: "banger-e2e", version: "0.0.0" });
const report = { steps: {} };

// call records a tool call's result, or the protocol error it raised.
async function call(step, name, args, opts = {}) {
  const progress = [];
  try {
    const res = await client.callTool({ name, arguments: args }, undefined, {
      timeout: 300000,
      resetTimeoutOnProgress: true,
      onprogress: (p) => progress.push(p),
      ...opts,
    });
    report.steps[step] = {
      isError: !!res.isError,
      text: (res.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n"),
      structured: res.structuredContent ?? null,
      progress,
    };
  } catch (e) {
    report.steps[step] = { protocolError: String(e && e.message ? e.message : e), progress };
  }
}

try {
  await client.connect(transport);
  report.tools = (await client.listTools()).tools.map((t) => ({ name: t.name, hasInput: !!t.inputSchema, hasOutput: !!t.outputSchema }));

  await call("run", "vm_run", { command: ["uname", "-a"], memory_mib: 512 });
  await call("bad_memory", "vm_create", { memory_mib: -1 });
  await call("over_memory", "vm_create", { memory_mib: 4096 });
  await call("shared_network", "vm_create", { memory_mib: 512, network: "shared" });
  await call("create", "vm_create", { name: "mcpdev", memory_mib: 512 });
  await call("over_count", "vm_create", { name: "second", memory_mib: 512 });
  await call("write", "vm_write_file", { name: "mcpdev", path: "/root/mcp/hello.txt", content: "hello from mcp\n\u00e9\n", mode: "0600" });
  await call("read", "vm_read_file", { name: "mcpdev", path: "/root/mcp/hello.txt" });
  await call("stat", "vm_exec", { name: "mcpdev", command: ["stat", "-c", "%a %s", "/root/mcp/hello.txt"] });
  await call("exec_env", "vm_exec", { name: "mcpdev", command: ["sh", "-c", "echo $GREETING; pwd; cat"], env: ["GREETING=hi"], workdir: "/root/mcp", stdin: "from stdin" });
  await call("big_read", "vm_exec", { name: "mcpdev", command: ["sh", "-c", "head -c 1048577 /dev/zero > /root/big"] });
  await call("read_big", "vm_read_file", { name: "mcpdev", path: "/root/big" });
  // A hostile guest: a flood of output, and a symlink aimed at a host file.
  await call("flood", "vm_exec", { name: "mcpdev", command: ["sh", "-c", "head -c 3145728 /dev/zero | tr '\\0' a; echo tail >&2"] });
  await call("link", "vm_exec", { name: "mcpdev", command: ["ln", "-s", process.env.MCP_HOST_SECRET, "/root/host-secret"] });
  await call("read_link", "vm_read_file", { name: "mcpdev", path: "/root/host-secret" });
  await call("read_dir", "vm_read_file", { name: "mcpdev", path: "/root/mcp" });
  await call("timeout", "vm_exec", { name: "mcpdev", command: ["sleep", "60"], timeout_seconds: 3600 });
  await call("after_timeout", "vm_exec", { name: "mcpdev", timeout_seconds: 8, command: ["sh", "-c",
    "for i in 1 2 3 4 5 6 7 8 9 10; do n=; for f in /proc/[0-9]*/comm; do read -r c < $f 2>/dev/null && [ \"$c\" = sleep ] && n=\"$n $f\"; done; [ -z \"$n\" ] && { echo gone; exit 0; }; sleep 0.5; done; echo still-running:$n"] });
  await call("forward", "vm_forward", { name: "mcpdev", guest_port: 22 });
  await call("ports", "vm_ports", { name: "mcpdev" });
  // [mcp] allow_network = false: the guest reaches no host listener, on the
  // gateway or on an outside address (MCP_NET_TARGETS: "host/port ...").
  const probe = (targets) => (targets || "").split(" ").filter(Boolean).map((t) =>
    `timeout 3 bash -c 'exec 3<>/dev/tcp/${t}' 2>/dev/null && echo connected:${t} || echo refused:${t}`).join("; ");
  await call("net", "vm_exec", { name: "mcpdev", command: ["bash", "-c", probe(process.env.MCP_NET_TARGETS)] });
  await call("snapshot", "vm_snapshot", { name: "mcpdev", as: "mcpsnap" });
  await call("snapshot_bad_name", "vm_snapshot", { name: "mcpdev", as: "../up" });
  await call("fork_over", "vm_fork", { from: "mcpsnap", count: 2 });
  await call("snapshots", "snapshot_list", {});
  await call("unknown_vm", "vm_exec", { name: "nosuchvm", command: ["true"] });
  await call("list", "vm_list", {});
  try {
    const r = await client.readResource({ uri: "banger://vm/mcpdev/console" });
    report.console = r.contents.map((c) => c.text || "").join("");
  } catch (e) {
    report.console_error = String(e.message || e);
  }
  await call("remove", "vm_remove", { name: "mcpdev" });
  // Restored from the snapshot, with mcpdev gone: its file is there, and
  // the clone is as cut off as its source.
  await call("run_from", "vm_run", { from: "mcpsnap", command: ["bash", "-c",
    "cat /root/mcp/hello.txt; " + probe(process.env.MCP_NET_TARGETS)] });
  await call("run_from_shape", "vm_run", { from: "mcpsnap", memory_mib: 512, command: ["true"] });
  await call("run_template_not", "vm_run", { template: "mcpsnap", command: ["true"] });
  await call("list_after", "vm_list", {});
  await call("unknown_tool", "vm_teleport", {});
} catch (e) {
  report.fatal = String(e && e.stack ? e.stack : e);
} finally {
  await client.close().catch(() => {});
}
process.stdout.write(JSON.stringify(report) + "\n");
