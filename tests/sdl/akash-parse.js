// Parse each SDL file named on the command line with Akash's own SDL library (akashjs's SDL
// class, as Akash Console and the CLI tools use it: network version beta3, mainnet) and print
// one JSON object per file, on one line: {"file", "ok", "error"} and, when it parses, what it
// asks for: the deployment groups (one per placement: attributes, signedBy, and per compute
// resource its cpu, memory, storage, gpu, count and price) and the manifest's services (per
// placement: image, command, args, env, count, resources, exposed ports, storage mounts,
// credentials; null, with "manifest_error", if akashjs fails to make its manifest). A file is
// accepted if the SDL class takes it and makes its groups (what is posted to the chain).
// tests/sdl/test_akash.py compares this with Kova's parse_manifest.
"use strict";

const fs = require("fs");
const path = require("path");
const { SDL } = require("@akashnetwork/akashjs/build/sdl");

function text(value) {
  if (value === null || value === undefined) return null;
  if (value instanceof Uint8Array) return Buffer.from(value).toString();
  return String(value);
}

function storage(volumes) {
  return (volumes || []).map((v) => ({
    name: v.name,
    size: text((v.quantity || v.size).val),
    attributes: Object.fromEntries((v.attributes || []).map((a) => [a.key, a.value])),
  }));
}

function resources(r) {
  return {
    cpu: text(r.cpu.units.val),
    memory: text((r.memory.quantity || r.memory.size).val),
    storage: storage(r.storage),
    gpu: {
      units: text(r.gpu ? r.gpu.units.val : 0),
      attributes: ((r.gpu && r.gpu.attributes) || []).map((a) => a.key).sort(),
    },
  };
}

function parse(file) {
  const out = { file: path.basename(file), ok: false, error: null };
  try {
    const sdl = SDL.fromString(fs.readFileSync(file, "utf8"), "beta3");
    const groups = sdl.groups().map((g) => ({
      name: g.name,
      attributes: Object.fromEntries(g.requirements.attributes.map((a) => [a.key, text(a.value)])),
      signedBy: g.requirements.signedBy,
      resources: g.resources.map((r) => ({
        ...resources(r.resource),
        count: r.count,
        price: { denom: r.price.denom, amount: text(r.price.amount) },
      })),
    }));
    Object.assign(out, { ok: true, groups, services: null, manifest_error: null });
    // what providers are sent; akashjs fails on some files whose groups it made (placements
    // not in alphabetical order, for one): then only the groups are compared
    try {
      out.services = services(sdl);
    } catch (error) {
      out.manifest_error = `${error.name}: ${error.message}`;
    }
  } catch (error) {
    out.error = `${error.name}: ${error.message}`;
  }
  return out;
}

function services(sdl) {
  return sdl.manifest(true).flatMap((group) =>
      group.services.map((s) => ({
        placement: group.name,
        name: s.name,
        image: s.image,
        command: s.command,
        args: s.args,
        env: s.env,
        count: s.count,
        resources: resources(s.resources),
        expose: s.expose.map((e) => ({
          port: e.port, as: e.externalPort, proto: e.proto, service: e.service,
          global: e.global, hosts: e.hosts, ip: e.ip,
        })),
        storage: s.params ? s.params.storage : [],
        credentials: s.credentials ? { host: s.credentials.host, username: s.credentials.username } : null,
      })),
    );
}

for (const file of process.argv.slice(2)) {
  process.stdout.write(JSON.stringify(parse(file)) + "\n");
}
