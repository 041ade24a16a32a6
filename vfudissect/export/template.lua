--
-- Two protocols:
--   vfucap    the capture record: exported-PDU payload named "vfucap" = the VFUC
--             pseudo-header (connection, direction, fds, fragments, TLVs) + bytes
--   vfio_user one vfio-user message: header, every command's payload fields,
--             request/response links, response time, and the same findings
--             (expert info, same codes) as `vfudissect read`
--
-- Use:  tshark -r capture.pcapng -X lua_script:vfio_user.lua [-2]
--       or copy this file into ~/.local/lib/wireshark/plugins/ (`vfudissect lua --install`).
-- Links to later frames (response_in, "reassembled in") and the findings only
-- known later (REPLY_TIMEOUT, NO_REPLY) need a second pass: tshark -2, or the GUI.
-- Every protocol table below (SPEC) is generated from vfudissect/spec.py.

--@SPEC@--

local C, E, SETS = SPEC.C, SPEC.enums, SPEC.sets
local band, bor, bnot, rshift = bit32.band, bit32.bor, bit32.bnot, bit32.rshift
local byte, sub, fmt, find, concat, lower = string.byte, string.sub, string.format, string.find, table.concat,
    string.lower
local floor, huge = math.floor, math.huge
local tinsert, tremove = table.insert, table.remove

local C2S, S2C = SPEC.dir_codes.c2s, SPEC.dir_codes.s2c
local OTHER = {[C2S] = S2C, [S2C] = C2S}
local DIR_WORD = {[C2S] = "c2s", [S2C] = "s2c"}
local ARROW = {[C2S] = "C→S", [S2C] = "S→C"}
local TWO32 = 4294967296
local TWO53 = 9007199254740992
local HI_EXACT = 2097152 -- 2^21: hi words below this give values below 2^53
local TWO64 = {TWO32, 0}
local CORRUPT_PREFIX = C.NOTE_CORRUPT_PREFIX

-- ======================================================================
-- Exact unsigned integers.  A value below 2^53 is a Lua number; larger ones
-- (u64 fields, sums of two u64) are {hi, lo} in base 2^32.  Zero is always 0.
-- ======================================================================
local function rd16(s, i)
  local a, b = byte(s, i, i + 1)
  return a + b * 256
end

local function rd32(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  return a + b * 256 + c * 65536 + d * 16777216
end

local function rd64(s, i)
  local lo, hi = rd32(s, i), rd32(s, i + 4)
  if hi < HI_EXACT then return hi * TWO32 + lo end
  return {hi, lo}
end

local function split(x)
  if type(x) == "table" then return x[1], x[2] end
  local hi = floor(x / TWO32)
  return hi, x - hi * TWO32
end

local function norm(hi, lo)
  if lo >= TWO32 then
    local carry = floor(lo / TWO32)
    hi, lo = hi + carry, lo - carry * TWO32
  end
  if hi < HI_EXACT then return hi * TWO32 + lo end
  return {hi, lo}
end

local function uadd(a, b)
  if type(a) == "number" and type(b) == "number" then
    local s = a + b
    if s < TWO53 then return s end
  end
  local ah, al = split(a)
  local bh, bl = split(b)
  return norm(ah + bh, al + bl)
end

local function ucmp(a, b)
  if type(a) == "number" and type(b) == "number" then
    if a < b then return -1 elseif a > b then return 1 end
    return 0
  end
  local ah, al = split(a)
  local bh, bl = split(b)
  if ah ~= bh then return ah < bh and -1 or 1 end
  if al ~= bl then return al < bl and -1 or 1 end
  return 0
end

local function ugt(a, b) return ucmp(a, b) > 0 end
local function ueq(a, b)
  if type(a) == "number" and type(b) == "number" then return a == b end
  return ucmp(a, b) == 0
end
local function ukey(a)
  if type(a) == "number" then return a end
  return fmt("B%d:%d", a[1], a[2])
end
local function ulow32(a)
  local _, lo = split(a)
  return lo
end
-- a % pg ~= 0 for a power of two pg (a number, possibly huge or inf)
local function umod_nonzero(a, pg)
  if pg ~= pg or pg >= TWO32 * TWO32 then return not ueq(a, 0) end
  if type(a) == "number" then return a % pg ~= 0 end
  if pg <= TWO32 then return a[2] % pg ~= 0 end
  return a[1] % (pg / TWO32) ~= 0 or a[2] ~= 0
end

local function dec(a)
  if type(a) == "number" then return fmt("%d", a) end
  -- exact decimal of hi * 2^32 + lo via base-10^7 limbs
  local limbs = {0}
  local function mul_add(m, add)
    local carry = add
    for i = 1, #limbs do
      local v = limbs[i] * m + carry
      carry = floor(v / 10000000)
      limbs[i] = v - carry * 10000000
    end
    while carry > 0 do
      local q = floor(carry / 10000000)
      limbs[#limbs + 1] = carry - q * 10000000
      carry = q
    end
  end
  mul_add(1, a[1])
  mul_add(65536, 0)
  mul_add(65536, a[2])
  local out = {fmt("%d", limbs[#limbs])}
  for i = #limbs - 1, 1, -1 do out[#out + 1] = fmt("%07d", limbs[i]) end
  return concat(out)
end

local function hex(a)
  if type(a) == "number" then return fmt("0x%x", a) end
  if a[1] < TWO32 then return fmt("0x%x%08x", a[1], a[2]) end
  return dec(a)
end

local POPCOUNT3 = {[0] = 0, 1, 1, 2, 1, 2, 2, 3}

-- ======================================================================
-- Protocols, fields, experts, preferences
-- ======================================================================
local vfucap = Proto("vfucap", "vfudissect capture record (VFUC)")
local vfu = Proto("vfio_user", "vfio-user")

local function flag_fields(list, prefix, bitnames, width)
  local out = {}
  local masks = {}
  for mask in pairs(bitnames) do masks[#masks + 1] = mask end
  table.sort(masks)
  for _, mask in ipairs(masks) do
    local f = ProtoField.bool(prefix .. "." .. lower(bitnames[mask]), bitnames[mask], width, nil, mask)
    out[#out + 1] = f
    list[#list + 1] = f
  end
  return out
end

-- ---- vfucap
local RF = {}
local rf_list = {}
local function rf(key, f)
  RF[key] = f
  rf_list[#rf_list + 1] = f
  return f
end
local DIR_NAMES = {[C2S] = "client to server", [S2C] = "server to client", [C.VFUC_DIR_NONE] = "none"}
rf("magic", ProtoField.string("vfucap.magic", "Magic"))
rf("version", ProtoField.uint8("vfucap.version", "Version"))
rf("rec_type", ProtoField.uint8("vfucap.rec_type", "Record type", base.DEC, E.REC_TYPE_NAMES))
rf("hdr_len", ProtoField.uint16("vfucap.hdr_len", "Header length"))
rf("conn", ProtoField.uint32("vfucap.conn", "Connection"))
rf("dir", ProtoField.uint8("vfucap.dir", "Direction", base.DEC, DIR_NAMES))
rf("flags", ProtoField.uint8("vfucap.flags", "Flags", base.HEX))
local RF_FLAG_BITS = flag_fields(rf_list, "vfucap.flags", E.VFUC_FLAGS, 8)
rf("num_fds", ProtoField.uint16("vfucap.num_fds", "Number of fds"))
rf("msg_len", ProtoField.uint32("vfucap.msg_len", "Message length"))
rf("frag_off", ProtoField.uint32("vfucap.frag_off", "Fragment offset"))
rf("msg_seq", ProtoField.uint32("vfucap.msg_seq", "Message sequence"))
rf("fd_ent_len", ProtoField.uint16("vfucap.fd_ent_len", "fd entry length"))
rf("reserved", ProtoField.uint16("vfucap.reserved", "Reserved", base.HEX))
rf("fd", ProtoField.none("vfucap.fd", "fd"))
rf("fd_kind", ProtoField.uint8("vfucap.fd.kind", "Kind", base.DEC, E.FD_KINDS))
rf("fd_reserved", ProtoField.uint24("vfucap.fd.reserved", "Reserved", base.HEX))
rf("fd_status_flags", ProtoField.uint32("vfucap.fd.status_flags", "Status flags (F_GETFL)", base.HEX))
rf("fd_size", ProtoField.uint64("vfucap.fd.size", "Size"))
rf("fd_ino", ProtoField.uint64("vfucap.fd.ino", "Inode"))
rf("fd_path", ProtoField.string("vfucap.fd.path", "Path"))
rf("tlv", ProtoField.none("vfucap.tlv", "TLV"))
rf("tlv_type", ProtoField.uint16("vfucap.tlv.type", "Type", base.DEC, E.TLV_NAMES))
rf("tlv_len", ProtoField.uint16("vfucap.tlv.len", "Length"))
rf("tlv_value", ProtoField.bytes("vfucap.tlv.value", "Value"))
rf("socket_path", ProtoField.string("vfucap.socket_path", "Socket path"))
for _, who in ipairs({"client", "server"}) do
  for _, what in ipairs({"pid", "uid", "gid"}) do
    rf(who .. "_" .. what, ProtoField.uint32("vfucap." .. who .. "." .. what, who .. " " .. what))
  end
end
rf("note", ProtoField.string("vfucap.note", "Note"))
rf("fd_index", ProtoField.uint16("vfucap.fd_path.index", "fd index"))
rf("proxy_errno", ProtoField.uint32("vfucap.proxy_errno", "Proxy errno", base.DEC, E.ERRNO_NAMES))
rf("twin_of", ProtoField.uint32("vfucap.twin_of", "Twin socket of connection"))
rf("payload", ProtoField.bytes("vfucap.payload", "Payload"))
rf("fragment", ProtoField.framenum("vfucap.fragment", "Fragment", base.NONE))
rf("fragment_count", ProtoField.uint32("vfucap.fragment.count", "Fragment count"))
rf("reassembled_in", ProtoField.framenum("vfucap.reassembled_in", "Reassembled in", base.NONE))
rf("reassembled_length", ProtoField.uint32("vfucap.reassembled.length", "Reassembled length"))
rf("corrupt", ProtoField.string("vfucap.corrupt", "Corrupt record"))
vfucap.fields = rf_list

local EX_VFUC_NEWER = ProtoExpert.new("vfucap.version_newer", "VFUC header version newer than this plugin",
  expert.group.PROTOCOL, expert.severity.WARN)
local EX_INCOMPLETE = ProtoExpert.new("vfucap.fragment_incomplete", "Fragment of a message the capture never completes",
  expert.group.REASSEMBLE, expert.severity.NOTE)
vfucap.experts = {EX_VFUC_NEWER, EX_INCOMPLETE}

-- ---- vfio_user
local VF = {}
local vf_list = {}
local function vf(key, f)
  VF[key] = f
  vf_list[#vf_list + 1] = f
  return f
end
vf("msg_id", ProtoField.uint16("vfio_user.msg_id", "Message ID"))
vf("command", ProtoField.uint16("vfio_user.command", "Command", base.DEC, E.COMMAND_NAMES))
vf("size", ProtoField.uint32("vfio_user.size", "Message size"))
vf("flags", ProtoField.uint32("vfio_user.flags", "Flags", base.HEX))
vf("flags_type", ProtoField.uint32("vfio_user.flags.type", "Type", base.DEC, E.MSG_TYPE_NAMES, C.FLAG_TYPE_MASK))
vf("flags_no_reply", ProtoField.bool("vfio_user.flags.no_reply", "No_reply", 32, nil, C.FLAG_NO_REPLY))
vf("flags_error", ProtoField.bool("vfio_user.flags.error", "Error", 32, nil, C.FLAG_ERROR))
vf("flags_reserved", ProtoField.uint32("vfio_user.flags.reserved", "Reserved", base.HEX, nil, C.FLAG_RESERVED_MASK))
local ERRNO_VS = {[0] = "none"}
for k, v in pairs(E.ERRNO_NAMES) do ERRNO_VS[k] = v end
vf("error", ProtoField.uint32("vfio_user.error", "Error (errno)", base.DEC, ERRNO_VS))
vf("request_in", ProtoField.framenum("vfio_user.request_in", "Request in", base.NONE, frametype.REQUEST))
vf("response_in", ProtoField.framenum("vfio_user.response_in", "Response in", base.NONE, frametype.RESPONSE))
vf("time", ProtoField.relative_time("vfio_user.time", "Response time"))
vf("finding", ProtoField.string("vfio_user.finding", "Finding"))
vf("payload", ProtoField.bytes("vfio_user.payload", "Payload"))
vf("data", ProtoField.bytes("vfio_user.data", "Data"))
vf("version_data", ProtoField.string("vfio_user.version.data", "Version data (JSON)"))
vf("caps", ProtoField.none("vfio_user.caps", "Capabilities"))
vf("caps_member", ProtoField.string("vfio_user.caps.member", "Member"))
vf("feature", ProtoField.uint32("vfio_user.device_feature.feature", "Feature", base.DEC, E.FEATURES, C.FEATURE_MASK))
vf("migration_flags", ProtoField.uint64("vfio_user.device_feature.migration_flags", "Migration flags", base.HEX))
vf("bitmap", ProtoField.bytes("vfio_user.bitmap", "Bitmap"))
vf("irq_bools", ProtoField.bytes("vfio_user.irq_set.data", "Data (one bool per interrupt)"))
vf("internal_error", ProtoField.string("vfio_user.internal_error", "Plugin error"))
local VF_MIGFLAG_BITS = flag_fields(vf_list, "vfio_user.device_feature.migration_flags", E.MIGRATION_FLAGS, 64)

-- payload layouts: vfio_user.<layout key> (subtree), .<field>, flag bits below them
local LAYOUT_F, LAYOUT_T = {}, {}
for _, key in ipairs(SPEC.layout_order) do
  local lay = SPEC.layouts[key]
  LAYOUT_T[key] = vf("layout_" .. key, ProtoField.none("vfio_user." .. key, lay.title))
  local entries = {}
  for _, f in ipairs(lay.fields) do
    local abbr = "vfio_user." .. key .. "." .. f.name
    local b = f.hex and base.HEX or base.DEC
    local vals = f.size <= 4 and f.values and E[f.values] or nil
    local pf
    if f.size == 1 then pf = ProtoField.uint8(abbr, f.name, b, vals, nil, f.desc)
    elseif f.size == 2 then pf = ProtoField.uint16(abbr, f.name, b, vals, nil, f.desc)
    elseif f.size == 4 then pf = ProtoField.uint32(abbr, f.name, b, vals, nil, f.desc)
    else pf = ProtoField.uint64(abbr, f.name, b, nil, nil, f.desc) end
    vf_list[#vf_list + 1] = pf
    local bits = f.bits and flag_fields(vf_list, abbr, E[f.bits], f.size * 8) or nil
    entries[#entries + 1] = {spec = f, pf = pf, bits = bits}
  end
  LAYOUT_F[key] = entries
end

-- variable-tail structures: vfio_user.<struct>.<field>
local STRUCT_F, STRUCT_T = {}, {}
for _, key in ipairs(SPEC.struct_order) do
  local st = SPEC.structs[key]
  STRUCT_T[key] = vf("struct_" .. key, ProtoField.none("vfio_user." .. key, st.title))
  local entries = {}
  for _, f in ipairs(st.fields) do
    local abbr = "vfio_user." .. key .. "." .. f.name
    local b = f.hex and base.HEX or base.DEC
    local vals = f.size <= 4 and f.values and E[f.values] or nil
    local pf
    if f.bytes then pf = ProtoField.bytes(abbr, f.name)
    elseif f.size == 2 then pf = ProtoField.uint16(abbr, f.name, b, vals)
    elseif f.size == 4 then pf = ProtoField.uint32(abbr, f.name, b, vals)
    else pf = ProtoField.uint64(abbr, f.name, b) end
    vf_list[#vf_list + 1] = pf
    entries[#entries + 1] = {spec = f, pf = pf}
  end
  STRUCT_F[key] = entries
end

-- capabilities: vfio_user.caps.<path> for every key of the schema
local CAP_F = {}
for _, path in ipairs(SPEC.capability_order) do
  local k = SPEC.capabilities[path]
  local abbr = "vfio_user.caps." .. path
  local pf
  if k.kind == "int" then pf = ProtoField.int64(abbr, path, base.DEC, nil, nil, k.desc)
  elseif k.kind == "bool" then pf = ProtoField.bool(abbr, path, base.NONE, nil, nil, k.desc)
  else pf = ProtoField.none(abbr, path, k.desc) end
  CAP_F[path] = pf
  vf_list[#vf_list + 1] = pf
end
vfu.fields = vf_list

-- one expert per finding code: vfio_user.finding.<code>
local GROUPS = {
  sequence = expert.group.SEQUENCE, protocol = expert.group.PROTOCOL, malformed = expert.group.MALFORMED,
  response_code = expert.group.RESPONSE_CODE, request_code = expert.group.REQUEST_CODE,
  undecoded = expert.group.UNDECODED,
}
local SEVERITIES = {note = expert.severity.NOTE, warning = expert.severity.WARN, error = expert.severity.ERROR}
local EXPERT = {}
local experts = {}
for _, f in ipairs(SPEC.findings) do
  local e = ProtoExpert.new("vfio_user.finding." .. lower(f.code), f.title, GROUPS[f.group], SEVERITIES[f.severity])
  EXPERT[f.code] = e
  experts[#experts + 1] = e
end
local EX_INTERNAL = ProtoExpert.new("vfio_user.internal_error.expert", "vfio_user Lua plugin error",
  expert.group.MALFORMED, expert.severity.ERROR)
experts[#experts + 1] = EX_INTERNAL
vfu.experts = experts

vfu.prefs.reply_timeout_ms = Pref.uint("Reply timeout (ms)", floor(C.DEFAULT_REPLY_TIMEOUT * 1000 + 0.5),
  "REPLY_TIMEOUT when a command waits longer than this for its reply (QEMU's x-msg-timeout); 0 disables")
vfu.prefs.show_payload = Pref.bool("Show data payloads", true,
  "Show the data bytes of region/DMA/migration reads and writes in the tree")

local function timeout_s()
  return vfu.prefs.reply_timeout_ms / 1000
end

-- ======================================================================
-- Per-frame results.  Lua's collector walks every live table on each cycle, and a
-- cycle comes every few hundred frames: results kept in one table entry per frame
-- would make the cost per message grow with the capture.  So the two newest chunks
-- of FS_CHUNK frames are tables and older chunks are sealed into one ByteArray each
-- (its bytes live outside Lua's heap); a later write to a sealed frame goes to a
-- small patch table.  Record fields: req, rtt (replies), resp (commands), fnd.
-- ======================================================================
local FS_CHUNK = 4096

local function fs_new()
  return {open = {}, sealed = {}, patch = {}, top = -1, ck = -1, cache = nil}
end

local function fs_seal(fs, k)
  local chunk = fs.open[k]
  fs.open[k] = nil
  if chunk == nil then return end
  local out = {}
  for f, rec in pairs(chunk) do
    local parts = {fmt("%d", f)}
    if rec.req then parts[#parts + 1] = fmt("q%d", rec.req) end
    if rec.rtt then parts[#parts + 1] = fmt("t%.17g", rec.rtt) end
    if rec.resp then parts[#parts + 1] = fmt("r%d", rec.resp) end
    if rec.fnd then parts[#parts + 1] = "F" .. concat(rec.fnd, "\2") end
    out[#out + 1] = concat(parts, "\1")
  end
  -- a ByteArray keeps the bytes outside Lua's heap: the collector's work stays flat
  fs.sealed[k] = ByteArray.new(concat(out, "\3"), true)
end

local function fs_decode(str)
  local chunk = {}
  for recs in string.gmatch(str, "[^\3]+") do
    local rec, f = {}, nil
    for item in string.gmatch(recs, "[^\1]+") do
      local tag = byte(item, 1)
      if f == nil then f = tonumber(item)
      elseif tag == 113 then rec.req = tonumber(sub(item, 2))
      elseif tag == 116 then rec.rtt = tonumber(sub(item, 2))
      elseif tag == 114 then rec.resp = tonumber(sub(item, 2))
      elseif tag == 70 then
        local l = {}
        for x in string.gmatch(sub(item, 2) .. "\2", "([^\2]*)\2") do l[#l + 1] = x end
        rec.fnd = l
      end
    end
    chunk[f] = rec
  end
  return chunk
end

-- the record of a frame, or nil (read only)
local function fs_get(fs, f)
  local k = floor(f / FS_CHUNK)
  local rec
  local c = fs.open[k]
  if c ~= nil then
    rec = c[f]
  elseif fs.sealed[k] ~= nil then
    if fs.ck ~= k then
      fs.cache, fs.ck = fs_decode(fs.sealed[k]:raw()), k
    end
    rec = fs.cache[f]
  end
  local p = fs.patch[f]
  if p ~= nil then
    local merged = {}
    if rec then for key, v in pairs(rec) do merged[key] = v end end
    for key, v in pairs(p) do merged[key] = v end
    rec = merged
  end
  return rec
end

-- a writable record for a frame (first pass: frames come in order)
local function fs_put(fs, f)
  local k = floor(f / FS_CHUNK)
  if k > fs.top then
    for old in pairs(fs.open) do
      if old < k - 1 then fs_seal(fs, old) end
    end
    fs.top = k
  end
  local c = fs.open[k]
  if c == nil then
    if k < fs.top - 1 or fs.sealed[k] ~= nil then
      local p = fs.patch[f]
      if p == nil then
        p = {}
        fs.patch[f] = p
      end
      return p
    end
    c = {}
    fs.open[k] = c
  end
  local rec = c[f]
  if rec == nil then
    rec = {}
    c[f] = rec
  end
  return rec
end

-- ======================================================================
-- Per-file state: built on the first pass, read on later passes
-- ======================================================================
local S

local function fnd_of(frame)
  local rec = fs_get(S.fs, frame)
  return rec and rec.fnd
end

local function reset()
  S = {
    conns = {},
    dl = {h = 1, t = 0},     -- reply deadlines, oldest first
    seq = 0,
    last_ts = 0,
    events = 0,              -- events seen on the first pass
    partial = {},            -- fragments being reassembled
    fs = fs_new(),           -- frame -> {req, rtt, resp, fnd = {code, text, ...}} (see above)
    late = {},               -- frame -> findings about it found later (REPLY_TIMEOUT, NO_REPLY at close)
    endf = {},               -- frame -> findings of the end of the capture (NO_REPLY, REPLY_TIMEOUT)
    end_at = -1,             -- S.events when endf was computed
    continued = false,       -- a rotated capture's part: the traffic goes on in the next file (no NO_REPLY at its end)
    corrupt = {},            -- frame -> text, for records that are corrupt because of their sequence
    frag_in = {},            -- fragment frame -> frame that completes the message
    reasm = {},              -- completing frame -> {data, frames, flags, fds, msg_len}
  }
end
reset()

function vfucap.init()
  reset()
end

-- ======================================================================
-- JSON, as Python's json module reads it (strict strings, no NaN/Infinity)
-- ======================================================================
local JSON_MAX_DEPTH = 980

local function is_digit(b) return b ~= nil and b >= 48 and b <= 57 end

local function skip_ws(s, i)
  local b = byte(s, i)
  while b == 32 or b == 9 or b == 10 or b == 13 do
    i = i + 1
    b = byte(s, i)
  end
  return i
end

local function hex4(s, i)
  local v = 0
  for k = i, i + 3 do
    local b = byte(s, k)
    if b == nil then return nil end
    local d
    if b >= 48 and b <= 57 then d = b - 48
    elseif b >= 97 and b <= 102 then d = b - 87
    elseif b >= 65 and b <= 70 then d = b - 55
    else return nil end
    v = v * 16 + d
  end
  return v
end

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64,
    0x80 + cp % 64)
end

local ESCAPES = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r",
  [116] = "\t"}

local function json_string(s, i)
  local out = {}
  local j = i + 1
  local n = #s
  while true do
    if j > n then return nil end
    local b = byte(s, j)
    if b == 34 then return concat(out), j + 1 end
    if b == 92 then
      local e = byte(s, j + 1)
      if e == 117 then
        local cp = hex4(s, j + 2)
        if cp == nil then return nil end
        j = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF and byte(s, j) == 92 and byte(s, j + 1) == 117 then
          local c2 = hex4(s, j + 2)
          if c2 ~= nil and c2 >= 0xDC00 and c2 <= 0xDFFF then
            cp = 0x10000 + (cp - 0xD800) * 1024 + (c2 - 0xDC00)
            j = j + 6
          end
        end
        out[#out + 1] = utf8_char(cp)
      else
        local r = ESCAPES[e]
        if r == nil then return nil end
        out[#out + 1] = r
        j = j + 2
      end
    elseif b < 32 then
      return nil
    else
      local k = j + 1
      while k <= n do
        local c = byte(s, k)
        if c == 34 or c == 92 or c < 32 then break end
        k = k + 1
      end
      out[#out + 1] = sub(s, j, k - 1)
      j = k
    end
  end
end

local function json_number(s, i)
  local j = i
  if byte(s, j) == 45 then j = j + 1 end
  local b = byte(s, j)
  if b == 48 then
    j = j + 1
  elseif b ~= nil and b >= 49 and b <= 57 then
    repeat j = j + 1 until not is_digit(byte(s, j))
  else
    return nil
  end
  local isfloat = false
  if byte(s, j) == 46 and is_digit(byte(s, j + 1)) then
    isfloat = true
    j = j + 2
    while is_digit(byte(s, j)) do j = j + 1 end
  end
  b = byte(s, j)
  if b == 101 or b == 69 then
    local k = j + 1
    local c = byte(s, k)
    if c == 43 or c == 45 then k = k + 1 end
    if is_digit(byte(s, k)) then
      while is_digit(byte(s, k)) do k = k + 1 end
      isfloat = true
      j = k
    end
  end
  local lit = sub(s, i, j - 1)
  return {t = isfloat and "float" or "int", lit = lit, v = tonumber(lit), p = i, e = j - 1}, j
end

local json_value

local function json_object(s, i, depth)
  local obj = {t = "obj", keys = {}, map = {}, p = i}
  local j = skip_ws(s, i + 1)
  if byte(s, j) == 125 then
    obj.e = j
    return obj, j + 1
  end
  while true do
    if byte(s, j) ~= 34 then return nil end
    local kp = j
    local k, j2 = json_string(s, j)
    if k == nil then return nil end
    j = skip_ws(s, j2)
    if byte(s, j) ~= 58 then return nil end
    j = skip_ws(s, j + 1)
    local v, j3 = json_value(s, j, depth + 1)
    if v == nil then return nil end
    v.kp = kp
    if obj.map[k] == nil then obj.keys[#obj.keys + 1] = k end
    obj.map[k] = v
    j = skip_ws(s, j3)
    local c = byte(s, j)
    if c == 125 then
      obj.e = j
      return obj, j + 1
    end
    if c ~= 44 then return nil end
    j = skip_ws(s, j + 1)
  end
end

local function json_array(s, i, depth)
  local arr = {t = "arr", items = {}, p = i}
  local j = skip_ws(s, i + 1)
  if byte(s, j) == 93 then
    arr.e = j
    return arr, j + 1
  end
  while true do
    local v, j2 = json_value(s, j, depth + 1)
    if v == nil then return nil end
    arr.items[#arr.items + 1] = v
    j = skip_ws(s, j2)
    local c = byte(s, j)
    if c == 93 then
      arr.e = j
      return arr, j + 1
    end
    if c ~= 44 then return nil end
    j = skip_ws(s, j + 1)
  end
end

json_value = function(s, i, depth)
  if depth > JSON_MAX_DEPTH then return nil end
  local b = byte(s, i)
  if b == 34 then
    local str, j = json_string(s, i)
    if str == nil then return nil end
    return {t = "str", v = str, p = i, e = j - 1}, j
  elseif b == 123 then
    return json_object(s, i, depth)
  elseif b == 91 then
    return json_array(s, i, depth)
  elseif b == 110 then
    if sub(s, i, i + 3) == "null" then return {t = "null", p = i, e = i + 3}, i + 4 end
  elseif b == 116 then
    if sub(s, i, i + 3) == "true" then return {t = "bool", v = true, p = i, e = i + 3}, i + 4 end
  elseif b == 102 then
    if sub(s, i, i + 4) == "false" then return {t = "bool", v = false, p = i, e = i + 4}, i + 5 end
  elseif b == 45 or is_digit(b) then
    return json_number(s, i)
  end
  return nil
end

local function json_decode(s)
  local v, j = json_value(s, skip_ws(s, 1), 0)
  if v == nil then return nil end
  if skip_ws(s, j) ~= #s + 1 then return nil end
  return v
end

-- Python's strict UTF-8 decoder: no overlongs, no surrogates, nothing above U+10FFFF
local function utf8_valid(s)
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    if c < 0x80 then
      i = i + 1
    else
      local need, lo, hi
      if c >= 0xC2 and c <= 0xDF then need, lo, hi = 1, 0x80, 0xBF
      elseif c == 0xE0 then need, lo, hi = 2, 0xA0, 0xBF
      elseif (c >= 0xE1 and c <= 0xEC) or c == 0xEE or c == 0xEF then need, lo, hi = 2, 0x80, 0xBF
      elseif c == 0xED then need, lo, hi = 2, 0x80, 0x9F
      elseif c == 0xF0 then need, lo, hi = 3, 0x90, 0xBF
      elseif c >= 0xF1 and c <= 0xF3 then need, lo, hi = 3, 0x80, 0xBF
      elseif c == 0xF4 then need, lo, hi = 3, 0x80, 0x8F
      else return false end
      local c2 = byte(s, i + 1)
      if c2 == nil or c2 < lo or c2 > hi then return false end
      for k = 2, need do
        local ck = byte(s, i + k)
        if ck == nil or ck < 0x80 or ck > 0xBF then return false end
      end
      i = i + need + 1
    end
  end
  return true
end

-- text for Wireshark's labels: valid UTF-8 only
local function safe(s)
  if not utf8_valid(s) then s = string.gsub(s, "[\128-\255]", "?") end
  if find(s, "[%c]") then s = string.gsub(s, "[%c]", function(c) return fmt("\\x%02x", byte(c)) end) end
  return s
end

local function json_type_name(v)
  local t = v.t
  if t == "null" then return "null" end
  if t == "bool" then return "a boolean" end
  if t == "int" or t == "float" then return "a number" end
  if t == "str" then return "a string" end
  if t == "arr" then return "an array" end
  return "an object"
end

-- compact JSON text of a parsed value (for the Info column and labels)
local function json_text(v, limit)
  local out = {}
  local n = 0
  local function put(x)
    out[#out + 1] = x
    n = n + #x
  end
  local function walk(x)
    if limit and n > limit then return end
    local t = x.t
    if t == "obj" then
      put("{")
      for i, k in ipairs(x.keys) do
        if i > 1 then put(",") end
        put(fmt("%q", k):gsub("\\\n", "\\n"))
        put(":")
        walk(x.map[k])
      end
      put("}")
    elseif t == "arr" then
      put("[")
      for i, item in ipairs(x.items) do
        if i > 1 then put(",") end
        walk(item)
      end
      put("]")
    elseif t == "str" then put((fmt("%q", x.v):gsub("\\\n", "\\n")))
    elseif t == "bool" then put(x.v and "true" or "false")
    elseif t == "null" then put("null")
    else put(x.lit) end
  end
  walk(v)
  local s = concat(out)
  if limit and #s > limit then s = sub(s, 1, limit) .. "…" end
  return s
end

-- exact value mod 4096 of an integer literal
local function lit_mod4096(lit)
  local r = 0
  for i = 1, #lit do
    local b = byte(lit, i)
    if b >= 48 and b <= 57 then r = (r * 10 + b - 48) % 4096 end
  end
  return r
end

-- lowest set bit of a positive integer literal, as a number (2^k; inf beyond doubles)
local function lit_lowbit(lit)
  local digits = {}
  for i = 1, #lit do
    local b = byte(lit, i)
    if b >= 48 and b <= 57 then digits[#digits + 1] = b - 48 end
  end
  local k = 0
  while true do
    local last = digits[#digits]
    if last % 2 == 1 then break end
    -- divide the decimal digit string by 2
    local carry = 0
    for i = 1, #digits do
      local v = carry * 10 + digits[i]
      digits[i] = floor(v / 2)
      carry = v % 2
    end
    k = k + 1
    if k > 4096 then break end
  end
  return 2 ^ k
end

-- ======================================================================
-- VERSION data and the capability schema (spec.CAPABILITIES)
-- ======================================================================
local CAPS = SPEC.capabilities

local function problem(list, code, text)
  list[#list + 1] = code
  list[#list + 1] = text
end

local function check_cap_value(schema, v)
  local kind = schema.kind
  if kind == "object" then
    if v.t == "obj" then return nil end
    return "must be an object, not " .. json_type_name(v)
  end
  if kind == "bool" then
    if v.t == "bool" then return nil end
    return "must be a boolean, not " .. json_type_name(v)
  end
  if v.t ~= "int" then return "must be an integer, not " .. json_type_name(v) end
  if schema.minimum ~= nil and v.v < schema.minimum then return fmt("below the minimum %d", schema.minimum) end
  if schema.maximum ~= nil and v.v > schema.maximum then return fmt("above the maximum %d", schema.maximum) end
  if schema.page_aligned and lit_mod4096(v.lit) ~= 0 then
    return "low 12 bits must be clear (page sizes of at least 4 KiB)"
  end
  return nil
end

local function check_cap_object(obj, prefix, out)
  for _, key in ipairs(obj.keys) do
    local v = obj.map[key]
    local path = prefix .. key
    local schema = CAPS[path]
    if schema == nil then
      problem(out, "CAPS_UNKNOWN_KEY", fmt("unknown capability '%s' (QEMU warns 'spurious capabilities')", path))
    else
      if schema.legacy and not find(path, ".", 1, true) then
        problem(out, "CAPS_LEGACY_KEY", fmt("legacy capability '%s' (not in the final spec; QEMU and "
          .. "libvfio-user still send it)", path))
      end
      local bad = check_cap_value(schema, v)
      if bad then
        problem(out, "CAPS_BAD_VALUE", fmt("%s = %s: %s", path, json_text(v, 60), bad))
      elseif schema.kind == "object" then
        check_cap_object(v, path .. ".", out)
      end
    end
  end
end

-- raw: the bytes after major/minor.  Returns caps (object node or nil), problems, doc, body
local function parse_version_data(raw)
  local out = {}
  local n = #raw
  if n == 0 then return nil, out end
  local body
  if byte(raw, n) ~= 0 then
    problem(out, "CAPS_NOT_NUL_TERMINATED", fmt("version data of %d bytes does not end with NUL (last byte 0x%02x)",
      n, byte(raw, n)))
    body = raw
  else
    body = sub(raw, 1, n - 1)
  end
  local nul = find(body, "\0", 1, true)
  if nul then
    problem(out, "CAPS_EMBEDDED_NUL", fmt("NUL at byte %d of the version data; implementations parse only up to it",
      nul - 1))
    body = sub(body, 1, nul - 1)
  end
  if not utf8_valid(body) then
    problem(out, "CAPS_MALFORMED", "version data is not UTF-8")
    return nil, out
  end
  if raw == "\0" then return nil, out, nil, body end
  local doc = json_decode(body)
  if doc == nil then
    if find(body, "^[%s]*$") then
      problem(out, "CAPS_MALFORMED", "version data holds no JSON")
    else
      problem(out, "CAPS_MALFORMED", "capabilities JSON does not parse")
    end
    return nil, out, nil, body
  end
  if doc.t ~= "obj" then
    problem(out, "CAPS_NOT_OBJECT", fmt("JSON top level is %s, not an object (QEMU rejects it; libvfio-user "
      .. "ignores it)", json_type_name(doc)))
    return nil, out, doc, body
  end
  local caps
  for _, key in ipairs(doc.keys) do
    local v = doc.map[key]
    if key == "capabilities" then
      if v.t == "obj" then
        caps = v
      else
        problem(out, "CAPS_NOT_OBJECT", fmt("'capabilities' is %s, not an object", json_type_name(v)))
      end
    else
      problem(out, "CAPS_UNKNOWN_KEY", fmt("unknown top-level key '%s'", key))
    end
  end
  if caps then check_cap_object(caps, "", out) end
  return caps, out, doc, body
end

-- a capability node by dotted path if present and well typed, else nil
local function cap_node(caps, path)
  local cur = caps
  for part in string.gmatch(path, "[^.]+") do
    if cur == nil or cur.t ~= "obj" then return nil end
    cur = cur.map[part]
  end
  if cur == nil then return nil end
  local schema = CAPS[path]
  if schema ~= nil and check_cap_value(schema, cur) ~= nil then return nil end
  return cur
end

local function cap_num(caps, path, default)
  local node = cap_node(caps, path)
  if node == nil then return default end
  return node.v
end

-- ======================================================================
-- The analysis engine (a port of vfudissect/core/analyzer.py, same codes on
-- the same frames).  Runs on the first pass only; results go to S by frame.
-- ======================================================================
local COMMANDS = SPEC.commands
local LAYOUTS = SPEC.layouts
local FLAG_PCI, IRQ_MASKABLE = 0, 0
for bit, name in pairs(E.DEVICE_INFO_FLAGS) do
  if name == "PCI" then FLAG_PCI = bit end
end
for bit, name in pairs(E.IRQ_INFO_FLAGS) do
  if name == "MASKABLE" then IRQ_MASKABLE = bit end
end
local ERRNO = E.ERRNO_NAMES

local function cmd_name(cmd)
  local info = COMMANDS[cmd]
  return info and info.name or fmt("CMD_%d", cmd)
end

local function newq()
  return {h = 1, t = 0}
end

local function new_conn(id)
  return {
    conn = id, twin_of = nil, twin_conn = nil,
    version_state = "none", version_req = nil, seen_c2s = false,
    client_max_xfer = C.DEFAULT_MAX_DATA_XFER_SIZE, server_max_xfer = C.DEFAULT_MAX_DATA_XFER_SIZE,
    client_max_fds = C.QEMU_DEFAULT_MAX_MSG_FDS, server_max_fds = C.QEMU_DEFAULT_MAX_MSG_FDS,
    max_dma_maps = C.DEFAULT_MAX_DMA_MAPS, min_pgsize = 4096, twin_negotiated = false,
    num_regions = nil, num_irqs = nil, regions = {}, irqs = {},
    maps_starts = {}, maps = {}, mig_state = nil,
    raw_dirs = {}, closed_dirs = {}, nclosed = 0,
    out = {[C2S] = newq(), [S2C] = newq()},   -- outstanding commands per requester, oldest first
    pend = {[C2S] = {}, [S2C] = {}},          -- requester -> msg_id -> FIFO of commands
  }
end

local function get_conn(id)
  local c = S.conns[id]
  if c == nil then
    c = new_conn(id)
    S.conns[id] = c
  end
  return c
end

-- outstanding queues: ordered, lazily compacted
local function out_first(q)
  local h = q.h
  while h <= q.t do
    local p = q[h]
    if p.in_out then
      q.h = h
      return p
    end
    q[h] = nil
    h = h + 1
  end
  q.h = h
  return nil
end

local function out_add(q, p)
  q.t = q.t + 1
  q[q.t] = p
  p.in_out = true
end

local function out_list(q)
  local list = {}
  for i = q.h, q.t do
    local p = q[i]
    if p ~= nil and p.in_out then list[#list + 1] = p end
  end
  return list
end

local function add_late(frame, code, text)
  local l = S.late[frame]
  if l == nil then
    l = {}
    S.late[frame] = l
  end
  l[#l + 1] = code
  l[#l + 1] = text
end

local function unpend(c, p)
  local byid = c.pend[p.dir]
  local q = byid[p.msg_id]
  if q ~= nil then
    for i = 1, #q do
      if q[i] == p then
        tremove(q, i)
        break
      end
    end
    if #q == 0 then byid[p.msg_id] = nil end
  end
  p.in_pend = false
  p.in_out = false
end

local function expire(now)
  local timeout = timeout_s()
  local dl = S.dl
  while dl.h <= dl.t do
    local p = dl[dl.h]
    if p.answered then
      dl[dl.h] = nil
      dl.h = dl.h + 1
    elseif now - p.ts <= timeout then
      break
    else
      dl[dl.h] = nil
      dl.h = dl.h + 1
      p.timed_out = true
      add_late(p.frame, "REPLY_TIMEOUT", fmt("%s id=%d unanswered after %g s", cmd_name(p.command), p.msg_id,
        timeout))
    end
  end
end

-- every event of the first pass starts here (timeouts fire on the passing of time)
local function event_time(ts)
  S.events = S.events + 1
  if S.dl.h <= S.dl.t and ts > S.last_ts then expire(ts) end
  if ts > S.last_ts then S.last_ts = ts end
end

-- the end of the capture: commands still waiting get NO_REPLY (or REPLY_TIMEOUT); recomputed
-- whenever the first pass saw more events since (live captures), without touching the state
local function finish()
  if S.end_at == S.events then return end
  S.end_at = S.events
  S.endf = {}
  local timeout = timeout_s()
  local last = S.last_ts
  for _, c in pairs(S.conns) do
    for _, d in ipairs({C2S, S2C}) do
      for _, p in ipairs(out_list(c.out[d])) do
        if not p.timed_out then
          local code, text
          if timeout > 0 and last - p.ts > timeout and not p.context then
            code, text = "REPLY_TIMEOUT", fmt("%s id=%d unanswered after %g s", cmd_name(p.command), p.msg_id, timeout)
          elseif p.in_pend and not S.continued then
            code, text = "NO_REPLY", fmt("%s id=%d got no reply before the capture ended (%.3f s)",
              cmd_name(p.command), p.msg_id, last - p.ts)
          end
          if code then
            local l = S.endf[p.frame]
            if l == nil then
              l = {}
              S.endf[p.frame] = l
            end
            l[#l + 1] = code
            l[#l + 1] = text
          end
        end
      end
    end
  end
end

-- ---- per-command checks --------------------------------------------------
local function bisect_right(a, x)
  local lo, hi = 0, #a
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if ucmp(x, a[mid + 1]) < 0 then hi = mid else lo = mid + 1 end
  end
  return lo
end

local function bits_text(value, names)
  local parts = {}
  local masks = {}
  for mask in pairs(names) do masks[#masks + 1] = mask end
  table.sort(masks)
  local known = 0
  for _, mask in ipairs(masks) do
    known = bor(known, mask)
    if band(value, mask) ~= 0 then parts[#parts + 1] = names[mask] end
  end
  local rest = band(value, bnot(known))
  if rest ~= 0 then parts[#parts + 1] = fmt("0x%x", rest) end
  if #parts == 0 then return "0" end
  return concat(parts, "|")
end

local function region_name(r)
  return E.PCI_REGIONS[r] or fmt("%d", r)
end

local function region_access_checks(c, cmd, f, plen, found)
  local region, count, offset = f.region, f.count, f.offset
  if count > c.server_max_xfer then
    problem(found, "DATA_BEYOND_MAX_XFER", fmt("count %d exceeds the server's max_data_xfer_size %d", count,
      c.server_max_xfer))
  end
  if cmd == 10 and plen ~= 16 + count then
    problem(found, "DATA_LENGTH_MISMATCH", fmt("REGION_WRITE payload %d bytes, 16 + count = %d", plen, 16 + count))
  end
  if count == 0 then
    problem(found, "ZERO_COUNT", "access of zero bytes (libvfio-user answers with an empty payload)")
  end
  if c.num_regions ~= nil and region >= c.num_regions then
    problem(found, "REGION_INDEX_INVALID", fmt("region %d but the device has %d", region, c.num_regions))
    return
  end
  local info = c.regions[region]
  if info ~= nil then
    if ugt(uadd(offset, count), info.size) then
      problem(found, "REGION_ACCESS_OUT_OF_RANGE", fmt("%s offset %s + count %d is beyond its size %s",
        region_name(region), hex(offset), count, hex(info.size)))
    end
    local need = cmd == 9 and C.REGION_FLAG_READ or C.REGION_FLAG_WRITE
    if band(info.flags, need) == 0 then
      problem(found, "REGION_ACCESS_NOT_PERMITTED", fmt("%s of %s, whose flags lack %s",
        cmd == 9 and "read" or "write", region_name(region), cmd == 9 and "READ" or "WRITE"))
    end
  end
end

local function dma_map_checks(c, frame, f, nfds, found)
  local argsz, flags, offset, address, size = f.argsz, f.flags, f.offset, f.address, f.size
  if argsz ~= 32 then problem(found, "DMA_MAP_BAD_ARGSZ", fmt("argsz %d, the spec says 32", argsz)) end
  if band(flags, bnot(C.DMA_MAP_FLAGS_LVU)) ~= 0 then
    problem(found, "DMA_MAP_FLAGS", fmt("flag bits 0x%x are not defined", band(flags, bnot(C.DMA_MAP_FLAGS_LVU))))
  end
  if nfds > 1 then
    problem(found, "FDS_UNEXPECTED", fmt("%d fds on DMA_MAP (at most 1; libvfio-user closes the rest)", nfds))
  end
  if band(flags, 0xC) ~= 0 and nfds == 0 then
    problem(found, "FDS_MISSING", "MMAP/FILE_IO flag without an fd (libvfio-user: EINVAL)")
  end
  if ueq(size, 0) or ugt(uadd(address, size), TWO64) then
    problem(found, "DMA_MAP_DEGENERATE", fmt("range %s+%s is empty or wraps", hex(address), hex(size)))
    return
  end
  if not ueq(offset, 0) and nfds == 0 then
    problem(found, "DMA_MAP_DEGENERATE", fmt("offset %s without an fd", hex(offset)))
  end
  local pg = c.min_pgsize
  if umod_nonzero(address, pg) or umod_nonzero(size, pg) then
    problem(found, "DMA_MAP_MISALIGNED", fmt("address %s / size %s not multiples of the page size %s", hex(address),
      hex(size), pg < TWO53 and hex(pg) or "2^big"))
  end
  local starts, maps = c.maps_starts, c.maps
  local i = bisect_right(starts, address)
  local clash
  if i > 0 and ugt(uadd(starts[i], maps[ukey(starts[i])].size), address) then
    clash = maps[ukey(starts[i])]
  elseif i < #starts and ucmp(starts[i + 1], uadd(address, size)) < 0 then
    clash = maps[ukey(starts[i + 1])]
  end
  if clash ~= nil then
    local same = ueq(clash.address, address) and ueq(clash.size, size) and clash.flags == flags
    if not same then
      problem(found, "DMA_MAP_OVERLAP", fmt("%s+%s overlaps the mapping %s+%s (frame %d); the spec wants EEXIST, "
        .. "libvfio-user answers EINVAL", hex(address), hex(size), hex(clash.address), hex(clash.size), clash.frame))
    end
    return
  end
  if #starts >= c.max_dma_maps then
    problem(found, "DMA_MAPS_EXCEEDED", fmt("%d live mappings, max_dma_maps is %d", #starts + 1, c.max_dma_maps))
  end
  tinsert(starts, i + 1, address)
  maps[ukey(address)] = {address = address, size = size, flags = flags, frame = frame, fd = nfds > 0}
end

local function clear_maps(c)
  local starts, maps = c.maps_starts, c.maps
  for k = #starts, 1, -1 do starts[k] = nil end
  for k in pairs(maps) do maps[k] = nil end
end

local function dma_unmap_checks(c, f, found)
  local flags, address, size = f.flags, f.address, f.size
  if flags ~= 0 then
    if flags == 2 and ueq(address, 0) and ueq(size, 0) then
      problem(found, "DMA_UNMAP_FLAGS", "unmap all (flag ALL, follows QEMU/libvfio-user; the final spec leaves "
        .. "flags unused)")
      clear_maps(c)
      return
    end
    problem(found, "DMA_UNMAP_FLAGS", fmt("flags 0x%x (%s); the final spec leaves them unused", flags,
      bits_text(flags, E.DMA_UNMAP_FLAGS)))
  end
  local m = c.maps[ukey(address)]
  if m == nil or not ueq(m.size, size) then
    problem(found, "DMA_UNMAP_UNKNOWN", fmt("%s+%s is not a live mapping", hex(address), hex(size)))
    return
  end
  c.maps[ukey(address)] = nil
  tremove(c.maps_starts, bisect_right(c.maps_starts, address))
end

local function dma_access_checks(c, cmd, f, plen, found)
  local address, count = f.address, f.count
  if ugt(count, c.client_max_xfer) then
    problem(found, "DATA_BEYOND_MAX_XFER", fmt("count %s exceeds the client's max_data_xfer_size %d", dec(count),
      c.client_max_xfer))
  end
  if cmd == 12 and not ueq(plen < 0 and -1 or plen, uadd(16, count)) then
    problem(found, "DATA_LENGTH_MISMATCH", fmt("DMA_WRITE payload %d bytes, 16 + count = %s", plen,
      dec(uadd(16, count))))
  end
  if ueq(count, 0) then
    problem(found, "ZERO_COUNT", "DMA access of zero bytes")
    return
  end
  local starts = c.maps_starts
  local i = bisect_right(starts, address)
  local m = i > 0 and c.maps[ukey(starts[i])] or nil
  if m == nil or ugt(uadd(address, count), uadd(m.address, m.size)) then
    problem(found, "DMA_ACCESS_UNMAPPED", fmt("%s+%s is not inside one live DMA mapping", hex(address), hex(count)))
  elseif cmd == 12 and band(m.flags, 0x2) == 0 then
    problem(found, "DMA_WRITE_READ_ONLY", fmt("DMA_WRITE into the read-only mapping %s (frame %d)", hex(m.address),
      m.frame), m.frame)
  end
end

local function set_irqs_checks(c, f, plen, nfds, found)
  local flags, index, start, count = f.flags, f.index, f.start, f.count
  if f.argsz ~= plen then
    problem(found, "SET_IRQS_BAD_ARGSZ", fmt("argsz %d but the payload is %d bytes%s", f.argsz, plen,
      f.argsz < 20 and " (below the 20-byte fixed part)" or ""))
  end
  local data_bits = band(flags, C.IRQ_SET_DATA_MASK)
  local act_bits = band(flags, C.IRQ_SET_ACTION_MASK)
  if POPCOUNT3[data_bits] ~= 1 or POPCOUNT3[rshift(act_bits, 3)] ~= 1 or flags >= 0x40 then
    problem(found, "SET_IRQS_BAD_FLAGS", fmt("flags 0x%x (%s) need exactly one DATA and one ACTION bit", flags,
      bits_text(flags, E.IRQ_SET_FLAGS)))
  end
  if data_bits == C.IRQ_SET_DATA_EVENTFD then
    if nfds ~= 0 and nfds ~= count then
      problem(found, nfds < count and "FDS_MISSING" or "FDS_UNEXPECTED",
        fmt("%d eventfds for count %d (0 de-assigns, else one per interrupt)", nfds, count))
    end
    if nfds > c.server_max_fds then
      problem(found, "FDS_UNEXPECTED", fmt("%d fds exceed the server's max_msg_fds %d", nfds, c.server_max_fds))
    end
  elseif nfds ~= 0 then
    problem(found, "FDS_UNEXPECTED", fmt("%d fds with %s", nfds, bits_text(data_bits, E.IRQ_SET_FLAGS)))
  end
  if data_bits == C.IRQ_SET_DATA_BOOL and plen ~= 20 + count then
    problem(found, "DATA_LENGTH_MISMATCH", fmt("DATA_BOOL payload %d bytes, 20 + count = %d", plen, 20 + count))
  end
  if act_bits == C.IRQ_SET_ACTION_MASK_BIT or act_bits == C.IRQ_SET_ACTION_UNMASK then
    local what = fmt("%s on %s", E.IRQ_SET_FLAGS[act_bits], E.PCI_IRQS[index] or fmt("%d", index))
    local info = c.irqs[index]
    if E.PCI_IRQS[index] == "ERR" or E.PCI_IRQS[index] == "REQ" then
      problem(found, "IRQ_NOT_MASKABLE", what .. ": ERR and REQ interrupts cannot be masked")
    elseif info ~= nil and band(info.flags, IRQ_MASKABLE) == 0 then
      problem(found, "IRQ_NOT_MASKABLE", fmt("%s, whose IRQ_INFO flags 0x%x lack MASKABLE", what, info.flags))
    end
  end
  if c.num_irqs ~= nil and index >= c.num_irqs then
    problem(found, "IRQ_OUT_OF_RANGE", fmt("IRQ index %d but the device has %d", index, c.num_irqs))
    return
  end
  if count == 0 then
    if start ~= 0 or flags ~= bor(C.IRQ_SET_DATA_NONE, C.IRQ_SET_ACTION_TRIGGER) then
      problem(found, "IRQ_OUT_OF_RANGE", "count 0 is only valid with start 0 and DATA_NONE|ACTION_TRIGGER")
    end
    return
  end
  local info = c.irqs[index]
  if info ~= nil and start + count > info.count then
    problem(found, "IRQ_OUT_OF_RANGE", fmt("%s start %d + count %d beyond its %d interrupts",
      E.PCI_IRQS[index] or fmt("%d", index), start, count, info.count))
  end
end

local function feature_checks(c, s, n, f, found)
  local flags = f.flags
  local feature = band(flags, C.FEATURE_MASK)
  local ops = band(flags, bor(C.FEATURE_GET, C.FEATURE_SET, C.FEATURE_PROBE))
  local get, set, probe = band(ops, C.FEATURE_GET) ~= 0, band(ops, C.FEATURE_SET) ~= 0, band(ops, C.FEATURE_PROBE) ~= 0
  if ops == 0 or (get and set and not probe) or band(flags, bnot(bor(C.FEATURE_MASK, 0x70000))) ~= 0 then
    problem(found, "FEATURE_BAD_OPS", fmt("flags 0x%x: GET, SET and PROBE bits are inconsistent", flags))
  end
  if not SETS.VFIO_USER_FEATURES[feature] then
    problem(found, "FEATURE_UNKNOWN", fmt("feature %s is not used by vfio-user", E.FEATURES[feature] or
      fmt("%d", feature)))
  end
  if feature == C.FEATURE_MIG_DEVICE_STATE and ops == C.FEATURE_SET and n >= 28 then
    local state = rd32(s, 25)
    if not SETS.MIG_STATES_SETTABLE[state] then
      problem(found, "MIG_STATE_INVALID", fmt("device state %s cannot be requested", E.MIG_STATES[state] or
        fmt("%d", state)))
    elseif c.mig_state == C.MIG_STATE_STOP_COPY and state == C.MIG_STATE_PRE_COPY then
      problem(found, "MIG_STATE_INVALID", "STOP_COPY -> PRE_COPY is forbidden")
    end
    f.device_state = state
  end
end

local function check_version(c, s, is_reply, f, found)
  local caps, problems = parse_version_data(sub(s, 21))
  for k = 1, #problems do found[#found + 1] = problems[k] end
  if caps ~= nil and not is_reply then
    local twin = caps.map["twin_socket"]
    if twin ~= nil and twin.t == "obj" and twin.map["fd_index"] ~= nil then
      problem(found, "TWIN_SOCKET_BAD", "twin_socket.fd_index in a request (only valid in the reply)")
    end
  end
  f.capabilities = caps or false
  return caps
end

local function check_request(c, ev, cmd, f, decoded, plen, nfds, found)
  if cmd == 9 or cmd == 10 then
    if decoded then region_access_checks(c, cmd, f, plen, found) end
    if nfds ~= 0 then problem(found, "FDS_UNEXPECTED", fmt("%d fds on %s", nfds, cmd_name(cmd))) end
    return
  end
  if COMMANDS[cmd].request_fds_max == 0 and nfds ~= 0 then
    problem(found, "FDS_UNEXPECTED", fmt("%d fds on a %s request, which carries none", nfds, cmd_name(cmd)))
  end
  if cmd == 1 then
    if c.version_state == "negotiated" and c.twin_of == nil then
      problem(found, "VERSION_REPEATED", "VERSION after the negotiation completed")
    end
    local caps = check_version(c, ev.s, false, f, found)
    if c.version_state == "none" then
      c.version_state = "requested"
      c.version_req = {major = f.major, minor = f.minor, caps = caps, frame = ev.frame}
      c.client_max_xfer = cap_num(caps, "max_data_xfer_size", C.DEFAULT_MAX_DATA_XFER_SIZE)
      c.client_max_fds = cap_num(caps, "max_msg_fds", C.DEFAULT_MAX_MSG_FDS)
    end
  elseif not decoded then
    return
  elseif cmd == 2 then
    dma_map_checks(c, ev.frame, f, nfds, found)
  elseif cmd == 3 then
    dma_unmap_checks(c, f, found)
  elseif cmd >= 4 and cmd <= 7 then
    local need = cmd == 5 and 32 or 16
    if f.argsz < need then
      problem(found, "ARGSZ_TOO_SMALL", fmt("argsz %d is below the %d-byte reply", f.argsz, need))
    end
    local nonzero = {}
    for _, fd in ipairs(LAYOUTS[COMMANDS[cmd].request_layout].fields) do
      local v = f[fd.name]
      if fd.name ~= "argsz" and fd.name ~= "index" and v ~= nil and not ueq(v, 0) then
        nonzero[#nonzero + 1] = fd.name .. "=" .. hex(v)
      end
    end
    if #nonzero > 0 then
      problem(found, "INPUT_NOT_ZERO", concat(nonzero, ", ") .. " in the request (must be zero)")
    end
    if (cmd == 5 or cmd == 6) and c.num_regions ~= nil and f.index >= c.num_regions then
      problem(found, "REGION_INDEX_INVALID", fmt("region %d but the device has %d", f.index, c.num_regions))
    end
    if cmd == 7 and c.num_irqs ~= nil and f.index >= c.num_irqs then
      problem(found, "IRQ_OUT_OF_RANGE", fmt("IRQ index %d but the device has %d", f.index, c.num_irqs))
    end
  elseif cmd == 8 then
    set_irqs_checks(c, f, plen, nfds, found)
  elseif cmd == 11 or cmd == 12 then
    dma_access_checks(c, cmd, f, plen, found)
  elseif cmd == 16 then
    feature_checks(c, ev.s, ev.n, f, found)
  elseif cmd == 17 or cmd == 18 then
    if f.size > c.client_max_xfer then
      problem(found, "DATA_BEYOND_MAX_XFER", fmt("size %d exceeds max_data_xfer_size %d", f.size, c.client_max_xfer))
    end
    if cmd == 18 and plen ~= 8 + f.size then
      problem(found, "DATA_LENGTH_MISMATCH", fmt("payload %d bytes, 8 + size would be %d", plen, 8 + f.size))
    end
    local st = c.mig_state
    if st ~= nil then
      local ok
      if cmd == 17 then ok = st == C.MIG_STATE_PRE_COPY or st == C.MIG_STATE_STOP_COPY
      else ok = st == C.MIG_STATE_RESUMING end
      if not ok then
        problem(found, "MIG_DATA_WRONG_STATE", fmt("%s in device state %s", cmd_name(cmd), E.MIG_STATES[st] or
          fmt("%d", st)))
      end
    end
  elseif cmd == 15 then
    local w = f.wr_cnt
    if type(w) == "table" or plen ~= 8 + 24 * w then
      problem(found, "DATA_LENGTH_MISMATCH", fmt("payload %d bytes for wr_cnt %s", plen, dec(w)))
    end
  end
end

-- the findings list carries extra frames after the text; only codes and texts are kept
local function track_request(c, ev, msg_id, cmd, flags, f, found, no_expect)
  local byid = c.pend[ev.dir]
  local q = byid[msg_id]
  if q ~= nil then
    local older = q[#q]
    if not older.answered then
      problem(found, "DUPLICATE_PENDING_ID", fmt("msg_id %d is still outstanding (%s in frame %d)", msg_id,
        cmd_name(older.command), older.frame))
    end
  else
    q = {}
    byid[msg_id] = q
  end
  if ev.dir == C2S and c.twin_conn == nil then
    local dma = out_first(c.out[S2C])
    if dma ~= nil and not dma.no_reply then
      problem(found, "DMA_COLLISION", fmt("client sent a command while server %s id=%d (frame %d) is unanswered: "
        .. "libvfio-user reads it as the awaited reply", cmd_name(dma.command), dma.msg_id, dma.frame))
    end
  end
  S.seq = S.seq + 1
  local no_reply = band(flags, C.FLAG_NO_REPLY) ~= 0
  local p = {frame = ev.frame, ts = ev.ts, rel = ev.rel, conn = ev.conn, dir = ev.dir, msg_id = msg_id,
    command = cmd, no_reply = no_reply, fields = f, seq = S.seq, answered = false, timed_out = false,
    in_out = false, in_pend = true, context = band(ev.vflags, C.VF_CONTEXT) ~= 0}
  q[#q + 1] = p
  if not no_reply then
    out_add(c.out[ev.dir], p)
    if no_expect then
      p.timed_out = true  -- pairs with a reply if one comes; no REPLY_TIMEOUT or NO_REPLY if none
    elseif timeout_s() > 0 and not p.context then  -- a copy's time ran in its own file
      local dl = S.dl
      dl.t = dl.t + 1
      dl[dl.t] = p
    end
  elseif #q > 64 then
    q[1].in_pend = false
    tremove(q, 1)
  end
end

local function match_reply(c, ev, msg_id, cmd, found)
  local rdir = OTHER[ev.dir]
  local byid = c.pend[rdir]
  local q = byid[msg_id]
  if q == nil then
    problem(found, "UNMATCHED_REPLY", fmt("reply id=%d matches no outstanding %s command", msg_id,
      ev.dir == S2C and "client" or "server"))
    return nil
  end
  local req, at
  for i = 1, #q do
    if not q[i].no_reply then
      req, at = q[i], i
      break
    end
  end
  if req == nil then
    local nr = tremove(q, 1)
    nr.in_pend = false
    if #q == 0 then byid[msg_id] = nil end
    problem(found, "REPLY_TO_NO_REPLY", fmt("reply to %s id=%d (frame %d) which was sent with No_reply",
      cmd_name(nr.command), msg_id, nr.frame))
    return nr
  end
  tremove(q, at)
  req.in_pend = false
  if #q == 0 then byid[msg_id] = nil end
  req.answered = true
  local outq = c.out[req.dir]
  local first = out_first(outq)
  req.in_out = false
  if first ~= req and c.twin_of == nil then
    local older = out_first(outq)
    if older ~= nil and older.seq < req.seq then
      problem(found, "OUT_OF_ORDER_REPLY", fmt("answers frame %d before the older %s id=%d (frame %d)", req.frame,
        cmd_name(older.command), older.msg_id, older.frame))
    end
  end
  if req.command ~= cmd then
    problem(found, "REPLY_COMMAND_MISMATCH", fmt("reply says %s, its request (frame %d) was %s", cmd_name(cmd),
      req.frame, cmd_name(req.command)))
  end
  return req
end

local function version_order(c, d, cmd, is_reply, found)
  if d == C2S and not c.seen_c2s then
    c.seen_c2s = true
    if cmd ~= 1 or is_reply then
      problem(found, "VERSION_NOT_FIRST", fmt("first client message is %s, not VERSION", cmd_name(cmd)))
      c.version_state = "failed"
      return
    end
  end
  if c.version_state == "failed" then return end
  if cmd ~= 1 then
    problem(found, "TRAFFIC_BEFORE_VERSION_REPLY", fmt("%s before the VERSION reply", cmd_name(cmd)))
  end
end

local function check_error_reply(c, cmd, err, plen, req, found)
  if err == 0 then
    problem(found, "ERROR_REPLY_NO_ERRNO", "error reply with errno 0")
  else
    local name = ERRNO[err]
    problem(found, "ERROR_REPLY", fmt("%s failed: %s (%d)", cmd_name(cmd), name or fmt("errno %d", err), err))
    if err > C.MAX_ERRNO or name == nil then
      problem(found, "UNKNOWN_ERRNO", fmt("errno %d is unknown or above %d", err, C.MAX_ERRNO))
    end
  end
  if plen > 0 then
    problem(found, "ERROR_REPLY_WITH_PAYLOAD", fmt("error reply with %d payload bytes (libvfio-user's way for "
      .. "region accesses; the spec says header only)", plen))
  end
  if req == nil then return end
  if cmd == 1 and c.twin_of == nil then
    c.version_state = "failed"
    problem(found, "VERSION_REFUSED", fmt("server refused VERSION: %s", ERRNO[err] or fmt("errno %d", err)))
  elseif cmd == 2 then
    local addr = req.fields.address
    local m = addr ~= nil and c.maps[ukey(addr)] or nil
    if m ~= nil and m.frame == req.frame then
      c.maps[ukey(m.address)] = nil
      tremove(c.maps_starts, bisect_right(c.maps_starts, m.address))
    end
  end
end

local function check_caps_chain(s, base, plen, first, region_size)
  local n = #s
  local off, seen, prev = first, 0, 0
  while off ~= 0 do
    if off < 32 or off + 8 > plen then
      return fmt("capability at offset %d is outside the reply payload (%d bytes)", off, plen)
    end
    if off <= prev then
      return fmt("capability chain does not move forward (next %d after %d)", off, prev)
    end
    seen = seen + 1
    if seen > 64 then return "capability chain longer than 64 entries" end
    if base + off + 8 > n then return nil end
    local cap_id, nxt = rd16(s, base + off + 1), rd32(s, base + off + 5)
    if E.REGION_CAP_IDS[cap_id] == nil then
      return fmt("unknown capability id %d at offset %d", cap_id, off)
    end
    if cap_id == C.REGION_CAP_SPARSE_MMAP and base + off + 16 <= n then
      local nr = rd32(s, base + off + 9)
      if off + 16 + 16 * nr > plen then
        return fmt("sparse mmap cap with %d areas runs past the payload", nr)
      end
      for i = 0, nr - 1 do
        local p = base + off + 16 + 16 * i
        if p + 16 > n then break end
        local a_off, a_size = rd64(s, p + 1), rd64(s, p + 9)
        if ugt(uadd(a_off, a_size), region_size) then
          return fmt("sparse area %d (%s+%s) lies outside the region (%s)", i, hex(a_off), hex(a_size),
            hex(region_size))
        end
      end
    end
    prev = off
    off = nxt
  end
  return nil
end

local function nonempty(t)
  return t ~= nil and next(t) ~= nil
end

local function version_reply(c, ev, f, nfds, req, found)
  if c.twin_of ~= nil then return end
  local caps = check_version(c, ev.s, true, f, found)
  local vr = c.version_req or {}
  local ok = true
  if f.major ~= nil and vr.major ~= nil then
    if f.major ~= vr.major then
      problem(found, "VERSION_MAJOR_MISMATCH", fmt("server answered major %d, client proposed %d", f.major, vr.major))
      ok = false
    end
    if f.minor > vr.minor then
      problem(found, "VERSION_MINOR_TOO_HIGH", fmt("server answered minor %d, above the proposed %d", f.minor,
        vr.minor))
      ok = false
    end
  end
  local req_caps = vr.caps
  if caps ~= nil then
    local extra = {}
    for _, k in ipairs(caps.keys) do
      if req_caps == nil or req_caps.map[k] == nil then extra[#extra + 1] = k end
    end
    if #extra > 0 then
      table.sort(extra)
      problem(found, "CAPS_REPLY_NOT_SUBSET", fmt("reply has %s which the request lacked (libvfio-user always sends "
        .. "its limits)", concat(extra, ", ")))
    end
  end
  local twin = caps ~= nil and caps.map["twin_socket"] or nil
  local sup = twin ~= nil and twin.t == "obj" and twin.map["supported"] or nil
  if sup ~= nil and sup.t == "bool" and sup.v == true then
    local rt = req_caps ~= nil and req_caps.map["twin_socket"] or nil
    local rsup = rt ~= nil and rt.t == "obj" and rt.map["supported"] or nil
    local asked = rsup ~= nil and rsup.t == "bool" and rsup.v == true
    local idx = twin.map["fd_index"]
    local fd = idx ~= nil and idx.t == "int" and ev.fds[idx.v + 1] or nil
    local fd_kind = fd and E.FD_KINDS[fd.kind] or "unknown"
    if not asked then
      problem(found, "TWIN_SOCKET_BAD", "twin_socket.supported in the reply but the client did not ask")
    elseif idx == nil or idx.t ~= "int" or not (idx.v >= 0 and idx.v < nfds) then
      problem(found, "TWIN_SOCKET_BAD", fmt("twin_socket.fd_index %s but the reply carries %d fds",
        idx and json_text(idx, 20) or "None", nfds))
    elseif fd_kind ~= "socket" and fd_kind ~= "unknown" then
      problem(found, "TWIN_SOCKET_BAD", fmt("twin_socket.fd_index %d is not a socket (kind %s)", idx.v, fd_kind))
    else
      c.twin_negotiated = true
    end
  elseif nfds ~= 0 then
    problem(found, "FDS_UNEXPECTED", fmt("%d fds on a VERSION reply without twin_socket", nfds))
  end
  c.version_state = ok and "negotiated" or "failed"
  c.server_max_xfer = cap_num(caps, "max_data_xfer_size", C.DEFAULT_MAX_DATA_XFER_SIZE)
  c.server_max_fds = cap_num(caps, "max_msg_fds", C.QEMU_DEFAULT_MAX_MSG_FDS)
  c.max_dma_maps = cap_num(caps, "max_dma_maps", C.DEFAULT_MAX_DMA_MAPS)
  local pgs = cap_node(caps, "pgsizes")
  c.min_pgsize = pgs ~= nil and lit_lowbit(pgs.lit) or lit_lowbit(fmt("%d", C.DEFAULT_PGSIZES))
end

local function region_info_reply(c, ev, f, plen, nfds, rq, req, found)
  local index, flags, argsz, size = f.index, f.flags, f.argsz, f.size
  local has_rq = nonempty(rq)
  if has_rq and index ~= rq.index then
    problem(found, "REPLY_ECHO_MISMATCH", fmt("reply for region %d, request asked for %s", index,
      rq.index and fmt("%d", rq.index) or "None"))
  end
  c.regions[index] = {size = size, flags = flags}
  local truncated = has_rq and argsz > (rq.argsz or 0)
  if truncated then
    problem(found, "REPLY_TRUNCATED", fmt("reply needs argsz %d, the request allowed %d; the client retries with more",
      argsz, rq.argsz or 0))
  end
  if nfds > 1 then problem(found, "FDS_UNEXPECTED", fmt("%d fds on a region info reply (at most 1)", nfds)) end
  if band(flags, C.REGION_FLAG_MMAP) ~= 0 and nfds == 0 and not truncated then
    problem(found, "FDS_MISSING", fmt("%s is MMAP but the reply has no fd", region_name(index)))
  end
  if band(flags, C.REGION_FLAG_CAPS) ~= 0 and not truncated then
    local bad = check_caps_chain(ev.s, 16, plen, f.cap_offset, size)
    if bad then problem(found, "REGION_CAPS_BAD", bad) end
  end
end

local function check_reply(c, ev, cmd, f, decoded, plen, nfds, req, found)
  local info = COMMANDS[cmd]
  local rq = req.fields
  local has_rq = nonempty(rq)
  if cmd == 9 or cmd == 10 then
    if plen == 0 and rq.count == 0 then return end
    if plen < 16 or not decoded then
      problem(found, "PAYLOAD_TOO_SHORT", fmt("%s reply payload is %d bytes, needs 16", cmd_name(cmd), plen))
      return
    end
    if has_rq and (not ueq(f.offset, rq.offset) or f.region ~= rq.region) then
      problem(found, "REPLY_ECHO_MISMATCH", fmt("reply region %d offset %s, request region %d offset %s", f.region,
        hex(f.offset), rq.region, hex(rq.offset)))
    end
    if cmd == 9 then
      if has_rq and f.count > rq.count then
        problem(found, "REPLY_COUNT_TOO_BIG", fmt("reply count %d above the requested %d", f.count, rq.count))
      end
      if plen ~= 16 + f.count then
        problem(found, "DATA_LENGTH_MISMATCH", fmt("REGION_READ reply payload %d bytes, 16 + count = %d", plen,
          16 + f.count))
      end
    elseif has_rq and f.count ~= rq.count then
      problem(found, "REPLY_ECHO_MISMATCH", fmt("reply count %d, request count %d", f.count, rq.count))
    end
    if nfds ~= 0 then problem(found, "FDS_UNEXPECTED", fmt("%d fds on a %s reply", nfds, cmd_name(cmd))) end
    return
  end
  if info.reply_fds_max == 0 and nfds ~= 0 then
    problem(found, "FDS_UNEXPECTED", fmt("%d fds on a %s reply, which carries none", nfds, cmd_name(cmd)))
  end
  if plen < info.reply_min and not (cmd == 3 and plen == 0) and cmd ~= 12 then
    problem(found, "PAYLOAD_TOO_SHORT", fmt("%s reply payload is %d bytes, needs at least %d", cmd_name(cmd), plen,
      info.reply_min))
    return
  end
  if cmd == 1 then
    version_reply(c, ev, f, nfds, req, found)
  elseif cmd == 12 then
    if plen == 16 then
      problem(found, "DMA_LAYOUT_VARIANT", "DMA_WRITE reply of 16 bytes (libvfio-user's layout; the spec table says 12)")
    elseif plen == 0 then
      problem(found, "DMA_LAYOUT_VARIANT", "header-only DMA_WRITE reply (QEMU's layout)")
    elseif plen ~= 12 then
      problem(found, "DATA_LENGTH_MISMATCH", fmt("DMA_WRITE reply payload %d bytes", plen))
    end
  elseif not decoded then
    return
  elseif cmd == 4 then
    c.num_regions, c.num_irqs = f.num_regions, f.num_irqs
    local odd = {}
    if band(f.flags, FLAG_PCI) == 0 then odd[#odd + 1] = "no PCI flag" end
    if f.num_regions < C.PCI_MIN_REGIONS then
      odd[#odd + 1] = fmt("%d regions, below %d", f.num_regions, C.PCI_MIN_REGIONS)
    end
    if f.num_regions > C.QEMU_MAX_REGIONS then
      odd[#odd + 1] = fmt("%d regions, above QEMU's %d", f.num_regions, C.QEMU_MAX_REGIONS)
    end
    if f.num_irqs > C.QEMU_MAX_IRQS then
      odd[#odd + 1] = fmt("%d IRQ types, above QEMU's %d", f.num_irqs, C.QEMU_MAX_IRQS)
    end
    if #odd > 0 then problem(found, "DEVICE_INFO_UNUSUAL", concat(odd, "; ")) end
  elseif cmd == 3 then  -- M11: the reply echoes the unmapped entry
    if has_rq and rq.address ~= nil and (not ueq(f.address, rq.address) or not ueq(f.size, rq.size)) then
      problem(found, "REPLY_ECHO_MISMATCH", fmt("DMA_UNMAP reply %s+%s, request %s+%s", hex(f.address), hex(f.size),
        hex(rq.address), hex(rq.size)))
    end
  elseif cmd == 5 then
    region_info_reply(c, ev, f, plen, nfds, rq, req, found)
  elseif cmd == 6 then
    if has_rq and f.argsz > (rq.argsz or 0) then
      problem(found, "REPLY_TRUNCATED", fmt("reply needs argsz %d, the request allowed %d", f.argsz, rq.argsz or 0))
    elseif f.count ~= 0 and nfds == 0 then
      problem(found, "FDS_MISSING", fmt("%d sub-regions but no fds", f.count))
    end
  elseif cmd == 7 then
    c.irqs[f.index] = {count = f.count, flags = f.flags}
  elseif cmd == 11 then
    if has_rq and not ueq(f.count, rq.count) and ueq(ulow32(f.count), rq.count) then
      problem(found, "DMA_LAYOUT_VARIANT", "DMA_READ reply in QEMU's layout (u32 count, data at +12)")
    elseif not ueq(plen < 0 and -1 or plen, uadd(16, f.count)) then
      problem(found, "DATA_LENGTH_MISMATCH", fmt("DMA_READ reply payload %d bytes, 16 + count = %s", plen,
        dec(uadd(16, f.count))))
    elseif has_rq and (not ueq(f.address, rq.address) or not ueq(f.count, rq.count)) then
      problem(found, "REPLY_ECHO_MISMATCH", "DMA_READ reply does not echo address and count")
    end
  elseif cmd == 16 then
    if rq.device_state ~= nil then c.mig_state = rq.device_state end
  elseif cmd == 17 then
    local want = rq.size or 0
    if f.size > want then
      problem(found, "REPLY_COUNT_TOO_BIG", fmt("MIG_DATA_READ reply size %d above the requested %d", f.size, want))
    end
  end
end

-- one decoder per layout, compiled once: a table constructor of reads (no rehash, no loop)
local DECODE = {}
do
  local readers = {[1] = "byte", [2] = "rd16", [4] = "rd32", [8] = "rd64"}
  local env = {byte = byte, rd16 = rd16, rd32 = rd32, rd64 = rd64}
  for _, key in ipairs(SPEC.layout_order) do
    local parts = {}
    for _, fd in ipairs(LAYOUTS[key].fields) do
      parts[#parts + 1] = fmt("[%q] = %s(s, %d)", fd.name, readers[fd.size], 17 + fd.offset)
    end
    DECODE[key] = assert(load("local s = ...\nreturn {" .. concat(parts, ", ") .. "}", "=decode_" .. key, "t", env))
  end
end

local function decode_fields(key, s, n)
  local lay = LAYOUTS[key]
  if lay == nil or n - 16 < lay.size then return nil end
  return DECODE[key](s)
end

local function record_findings(frame, found)
  if #found > 0 then
    for k = 2, #found, 2 do found[k] = safe(found[k]) end
    fs_put(S.fs, frame).fnd = found
  end
end

-- ev: frame, ts, rel, conn, dir, s (captured bytes), n, wire, nfds, vflags
local function analyze_message(ev)
  local found = {}
  local conn = ev.conn
  local c = get_conn(conn)
  local s, n, d = ev.s, ev.n, ev.dir
  if n < 16 then
    problem(found, "BAD_SIZE", fmt("message of %d bytes is shorter than the 16-byte header", n))
    record_findings(ev.frame, found)
    return
  end
  local msg_id, cmd, size, flags, err = rd16(s, 1), rd16(s, 3), rd32(s, 5), rd32(s, 9), rd32(s, 13)
  local wire = ev.wire
  local mtype = band(flags, C.FLAG_TYPE_MASK)
  local is_reply = mtype == 1
  local nfds = ev.nfds
  local vflags = ev.vflags
  if size ~= wire then
    if size < 16 then
      problem(found, "BAD_SIZE", fmt("size %d is below the 16-byte header", size))
    elseif band(vflags, C.VF_FRAMING_ERROR) ~= 0 then
      -- the recorder did not wait for a body it could not frame: not an incomplete message
    elseif size > wire then
      problem(found, "MESSAGE_INCOMPLETE", fmt("size says %d bytes, only %d arrived", size, wire))
    else
      problem(found, "BAD_SIZE", fmt("size says %d bytes but the message is %d", size, wire))
    end
  end
  if size > C.LVU_SERVER_MAX_MSG_SIZE then
    problem(found, "MESSAGE_TOO_LARGE", fmt("size %d exceeds libvfio-user's %d", size, C.LVU_SERVER_MAX_MSG_SIZE))
  end
  if band(flags, 0xFFFFFFCE) ~= 0 then
    if mtype > 1 then
      problem(found, "BAD_TYPE", fmt("flags type %d is neither command (0) nor reply (1)", mtype))
    end
    if band(flags, C.FLAG_RESERVED_MASK) ~= 0 then
      problem(found, "RESERVED_FLAGS", fmt("reserved flag bits 0x%x set", band(flags, C.FLAG_RESERVED_MASK)))
    end
  end
  if vflags ~= 0 then
    if band(vflags, C.VF_FRAMING_ERROR) ~= 0 then
      if not c.raw_dirs[d] then
        c.raw_dirs[d] = true
        problem(found, "FRAMING_LOST", fmt("%s stream could not be framed: header size %d is %s; relayed raw "
          .. "from here on", DIR_WORD[d], size, size < 16 and "below 16" or "beyond what can be framed"))
      end
      if mtype == 0 then  -- a server may still answer it (libvfio-user: EINVAL), but none is expected
        track_request(c, ev, msg_id, cmd, flags, {}, found, true)
      end
      record_findings(ev.frame, found)
      return
    end
    if band(vflags, C.VF_FDS_CTRUNC) ~= 0 then
      problem(found, "FDS_TRUNCATED", "the kernel truncated the passed fds (MSG_CTRUNC)")
    end
    if band(vflags, C.VF_FDS_NOT_AT_MSG_START) ~= 0 then
      problem(found, "FDS_NOT_AT_MSG_START", "fds arrived after the first byte of the message")
    end
    if band(vflags, C.VF_TRUNCATED) ~= 0 then
      problem(found, "CAPTURE_TRUNCATED", fmt("payload truncated to %d of %d bytes by the recorder", n, wire))
    end
  end
  local info = COMMANDS[cmd]
  if info == nil then
    problem(found, "UNKNOWN_COMMAND", fmt("command %d is not defined by the spec", cmd))
  elseif cmd == 14 then
    problem(found, "REMOVED_COMMAND", "DIRTY_PAGES (14) was removed from the spec in 2023")
  end
  local plen = wire - 16
  local f, decoded = {}, false
  if info ~= nil and not (is_reply and band(flags, C.FLAG_ERROR) ~= 0) then
    local key
    if is_reply then key = info.reply_layout else key = info.request_layout end
    if key ~= nil then
      local got = decode_fields(key, s, n)
      if got ~= nil then
        f, decoded = got, true
      end
    end
  end
  if c.version_state ~= "negotiated" and c.twin_of == nil then
    version_order(c, d, cmd, is_reply, found)
  end
  -- twin socket channels (7.9 T1)
  if c.twin_negotiated and mtype == 0 and d == S2C then
    problem(found, "WRONG_CHANNEL", fmt("server %s on the main socket: with a twin socket negotiated, server "
      .. "commands go on the twin socket", info and info.name or fmt("command %d", cmd)))
  elseif c.twin_of ~= nil and ((mtype == 0 and d == C2S) or (is_reply and d == S2C)) then
    local what = mtype == 0 and fmt("client %s command", info and info.name or fmt("command %d", cmd))
      or "server reply"
    problem(found, "WRONG_CHANNEL", what .. " on the twin socket, which carries server commands and their "
      .. "replies only")
  end
  if mtype == 0 then
    if band(flags, C.FLAG_ERROR) ~= 0 then problem(found, "MISPLACED_FLAG", "Error flag set on a command") end
    if err ~= 0 then
      problem(found, "ERROR_IN_COMMAND", fmt("error field %d in a command (reserved, should be 0)", err))
    end
    if info ~= nil then
      if info.requester ~= d then
        problem(found, "WRONG_DIRECTION", fmt("%s is sent by the %s, not the %s", info.name,
          info.requester == C2S and "client" or "server", d == C2S and "client" or "server"))
      end
      if plen < info.request_min then
        problem(found, "PAYLOAD_TOO_SHORT", fmt("%s request payload is %d bytes, needs at least %d", info.name, plen,
          info.request_min))
      elseif cmd ~= 13 and plen == 0 then
        problem(found, "PAYLOAD_TOO_SHORT", fmt("%s request has no payload", info.name))
      end
      check_request(c, ev, cmd, f, decoded, plen, nfds, found)
    elseif nfds ~= 0 then
      problem(found, "FDS_UNEXPECTED", fmt("%d fds on an unknown command", nfds))
    end
    track_request(c, ev, msg_id, cmd, flags, f, found)
  elseif is_reply then
    if band(flags, C.FLAG_NO_REPLY) ~= 0 then problem(found, "MISPLACED_FLAG", "No_reply flag set on a reply") end
    local req = match_reply(c, ev, msg_id, cmd, found)
    if req ~= nil then
      local rec = fs_put(S.fs, ev.frame)
      rec.req, rec.rtt = req.frame, ev.rel - req.rel
      local old = fs_get(S.fs, req.frame)
      if old == nil or old.resp == nil then fs_put(S.fs, req.frame).resp = ev.frame end
    end
    if band(flags, C.FLAG_ERROR) ~= 0 then
      check_error_reply(c, cmd, err, plen, req, found)
    elseif info ~= nil and req ~= nil and req.command == cmd then
      check_reply(c, ev, cmd, f, decoded, plen, nfds, req, found)
    elseif info ~= nil and plen < info.reply_min then
      problem(found, "PAYLOAD_TOO_SHORT", fmt("%s reply payload is %d bytes, needs at least %d", info.name, plen,
        info.reply_min))
    end
  end
  if band(vflags, C.VF_CONTEXT) == 0 then  -- a CONTEXT copy was judged in the file where it was traffic
    record_findings(ev.frame, found)
  end
end

local function analyze_open(frame, conn, twin_of)
  local c = get_conn(conn)
  c.twin_of = twin_of
  if twin_of ~= nil then
    local main = get_conn(twin_of)
    main.twin_conn = conn
    c.client_max_xfer, c.server_max_xfer = main.client_max_xfer, main.server_max_xfer
    c.maps_starts, c.maps = main.maps_starts, main.maps
    c.version_state = "negotiated"
  end
end

local function analyze_close(frame, ts, conn, d)
  local c = get_conn(conn)
  if d == nil then
    c.closed_dirs[C2S], c.closed_dirs[S2C] = true, true
  else
    c.closed_dirs[d] = true
  end
  if c.closed_dirs[C2S] and c.closed_dirs[S2C] then
    for _, dd in ipairs({C2S, S2C}) do
      for _, p in ipairs(out_list(c.out[dd])) do
        if not p.no_reply and not p.timed_out then
          add_late(p.frame, "NO_REPLY", fmt("%s id=%d got no reply before the connection closed", cmd_name(p.command),
            p.msg_id))
        end
        p.answered = true
        unpend(c, p)
      end
    end
  end
end

local function analyze_raw(frame, conn, d, note)
  local c = get_conn(conn)
  if not c.raw_dirs[d] then
    c.raw_dirs[d] = true
    local why = note ~= "" and (": " .. note) or ""
    record_findings(frame, {"FRAMING_LOST", fmt("%s stream could not be framed%s; relayed raw from here on",
      DIR_WORD[d], why)})
  end
end

local function analyze_note(frame, text)
  if sub(text, 1, #C.NOTE_CONTINUED_PREFIX) == C.NOTE_CONTINUED_PREFIX then S.continued = true end
  if sub(text, 1, #CORRUPT_PREFIX) == CORRUPT_PREFIX then
    record_findings(frame, {"CAPTURE_CORRUPT", text})
  end
end

-- ======================================================================
-- Display: the vfio_user tree, the Info column
-- ======================================================================
local function human_size(n)
  local units = {"B", "KiB", "MiB", "GiB", "TiB"}
  for i, unit in ipairs(units) do
    if n < 1024 or unit == "TiB" then
      if i == 1 then return fmt("%d%s", n, unit) end
      return fmt("%.4g%s", n, unit)
    end
    n = n / 1024
  end
  return fmt("%d", n)
end

local function format_value(fd, v)
  if type(v) ~= "number" then return hex(v) end
  if fd.bits then return bits_text(v, E[fd.bits]) end
  if fd.values and E[fd.values][v] then return E[fd.values][v] end
  if fd.hex then return fmt("0x%x", v) end
  return fmt("%d", v)
end

local function key_fields(cmd, key, f, caps, vdata)
  local lay = LAYOUTS[key]
  local parts = {}
  if cmd == 16 and f.flags ~= nil then
    local idx = band(f.flags, C.FEATURE_MASK)
    parts[#parts + 1] = "feature=" .. (E.FEATURES[idx] or fmt("%d", idx))
  end
  for _, fd in ipairs(lay.fields) do
    local v = f[fd.name]
    if v ~= nil and fd.name ~= "argsz" then
      if cmd == 16 and fd.name == "flags" then v = band(v, bnot(C.FEATURE_MASK)) end
      parts[#parts + 1] = fd.name .. "=" .. format_value(fd, v)
    end
  end
  if caps then parts[#parts + 1] = "caps=" .. safe(json_text(caps, 200)) end
  if vdata then parts[#parts + 1] = "version_data=" .. safe(fmt("%q", sub(vdata, 1, 40))) end
  return concat(parts, " ")
end

local function add_findings(tree, list)
  if list == nil then return end
  for k = 1, #list, 2 do
    local code, text = list[k], list[k + 1]
    text = safe(text)
    local it = tree:add(VF.finding, code)
    it:set_text(code .. ": " .. text)
    it:set_generated()
    it:add_proto_expert_info(EXPERT[code], text)
  end
end

local function add_struct(tree, key, tvb, base, off, s)
  local st = SPEC.structs[key]
  local sub_tree = tree:add(STRUCT_T[key], tvb(base + off, st.size))
  local vals = {}
  for _, e in ipairs(STRUCT_F[key]) do
    local fd = e.spec
    local at = off + fd.offset
    sub_tree:add_le(e.pf, tvb(base + at, fd.size))
    if not fd.bytes then
      if fd.size == 2 then vals[fd.name] = rd16(s, at + 1)
      elseif fd.size == 4 then vals[fd.name] = rd32(s, at + 1)
      else vals[fd.name] = rd64(s, at + 1) end
    end
  end
  return sub_tree, vals
end

local function add_data(tree, tvb, base, off, len, field)
  if len > 0 and vfu.prefs.show_payload then tree:add(field or VF.data, tvb(base + off, len)) end
end

-- VERSION data: the JSON text and the capabilities as a tree of keys and values
local function add_json_member(tree, tvb, base, path, v, key_pos)
  local p0 = key_pos or v.p
  local range = tvb(base + p0 - 1, v.e - p0 + 1)
  local schema = CAPS[path]
  local pf = CAP_F[path]
  local item
  if schema ~= nil and check_cap_value(schema, v) == nil and (schema.kind ~= "int" or math.abs(v.v) < TWO53) then
    if schema.kind == "int" then
      item = tree:add(pf, range, Int64.new(v.v))
    elseif schema.kind == "bool" then
      item = tree:add(pf, range, v.v)
    else
      item = tree:add(pf, range)
    end
  else
    item = tree:add(VF.caps_member, range, safe(path))
    if v.t == "obj" then item:set_text(safe(path)) else item:set_text(safe(path .. ": " .. json_text(v, 80))) end
  end
  if v.t == "obj" then
    for _, k in ipairs(v.keys) do
      local child = v.map[k]
      add_json_member(item, tvb, base, path .. "." .. k, child, child.kp)
    end
  end
end

local function add_version_tail(tree, tvb, base, s, n)
  if n <= 20 then return nil end
  local raw = sub(s, 21)
  local caps, _, doc, body = parse_version_data(raw)
  if tree ~= nil then tree:add(VF.version_data, tvb(base + 20, n - 20)) end
  if tree ~= nil and doc ~= nil and doc.t == "obj" then
    local ct = tree:add(VF.caps, tvb(base + 20 + doc.p - 1, doc.e - doc.p + 1))
    ct:set_text("Version data")
    for _, k in ipairs(doc.keys) do
      local v = doc.map[k]
      if k == "capabilities" and v.t == "obj" then
        local capt = ct:add(VF.caps, tvb(base + 20 + v.kp - 1, v.e - v.kp + 1))
        capt:set_text("Capabilities")
        for _, ck in ipairs(v.keys) do
          local cv = v.map[ck]
          add_json_member(capt, tvb, base + 20, ck, cv, cv.kp)
        end
      else
        local it = ct:add(VF.caps_member, tvb(base + 20 + v.kp - 1, v.e - v.kp + 1), safe(k))
        it:set_text(safe(k .. ": " .. json_text(v, 80)))
      end
    end
  end
  if doc == nil and body ~= nil and body ~= "" then return nil, body end
  return caps
end

local function add_caps_chain(tree, tvb, base, s, n, first)
  local off, prev, seen = first, 0, 0
  while off ~= 0 and off > prev and seen < 64 do
    local at = 16 + off
    if at + 8 > n then break end
    seen = seen + 1
    local ct, hdr = add_struct(tree, "region_cap", tvb, base, at, s)
    ct:set_text(fmt("Capability %s at %d", E.REGION_CAP_IDS[hdr.id] or fmt("%d", hdr.id), off))
    if hdr.id == C.REGION_CAP_SPARSE_MMAP and at + 16 <= n then
      local _, head = add_struct(ct, "sparse_mmap", tvb, base, at + 8, s)
      for i = 0, math.min(head.nr_areas, 4096) - 1 do
        local p = at + 16 + 16 * i
        if p + 16 > n then break end
        local area = add_struct(ct, "sparse_area", tvb, base, p, s)
        area:set_text(fmt("Area %d", i))
      end
    elseif hdr.id == C.REGION_CAP_TYPE and at + 16 <= n then
      add_struct(ct, "region_type", tvb, base, at + 8, s)
    end
    prev = off
    off = hdr.next
  end
end

-- payload tails that are a bitmap behind a header struct: tail -> {struct, request flag that brings it}
local BITMAP_TAILS = {bitmap = {"unmap_bitmap", 1}, dirty = {"dirty_bitmap", 4}}

local function add_tail(tree, tvb, base, s, n, cmd, is_reply, lay, f)
  local off = 16 + lay.size
  local rest = n - off
  if rest <= 0 then return end
  local tail = lay.tail
  if tail == "data" then
    add_data(tree, tvb, base, off, rest)
  elseif tail == "caps" then
    if band(f.flags, C.REGION_FLAG_CAPS) ~= 0 and f.cap_offset >= 32 then
      add_caps_chain(tree, tvb, base, s, n, f.cap_offset)
    else
      add_data(tree, tvb, base, off, rest)
    end
  elseif tail == "io_fds" then
    local count = f.count
    local stride = count > 0 and (f.argsz - 16) / count or 0
    local key = stride == SPEC.structs.io_fd.size and "io_fd" or (stride == SPEC.structs.io_fd_lvu.size and
      "io_fd_lvu" or nil)
    if key == nil and count > 0 and rest >= count * SPEC.structs.io_fd_lvu.size then key = "io_fd_lvu" end
    if key == nil and count > 0 then key = "io_fd" end
    if key == nil then
      add_data(tree, tvb, base, off, rest)
      return
    end
    local size = SPEC.structs[key].size
    for i = 0, math.min(count, 1024) - 1 do
      local p = off + i * size
      if p + size > n then break end
      local e = add_struct(tree, key, tvb, base, p, s)
      e:set_text(fmt("I/O fd entry %d", i))
    end
  elseif tail == "irq_data" then
    add_data(tree, tvb, base, off, rest, VF.irq_bools)
  elseif tail == "multi" then
    local size = SPEC.structs.write_multi_entry.size
    local cnt = type(f.wr_cnt) == "number" and f.wr_cnt or 0
    for i = 0, math.min(cnt, 4096) - 1 do
      local p = off + i * size
      if p + size > n then break end
      local e, v = add_struct(tree, "write_multi_entry", tvb, base, p, s)
      e:set_text(fmt("Write %d: %s offset %s count %d", i, region_name(v.region), hex(v.offset), v.count))
    end
  elseif tail == "feature_data" then
    local feature = band(f.flags, C.FEATURE_MASK)
    if feature == C.FEATURE_MIGRATION and rest >= 8 then
      local it = tree:add_le(VF.migration_flags, tvb(base + off, 8))
      for _, b in ipairs(VF_MIGFLAG_BITS) do it:add_le(b, tvb(base + off, 8)) end
    elseif feature == C.FEATURE_MIG_DEVICE_STATE and rest >= SPEC.structs.mig_state.size then
      add_struct(tree, "mig_state", tvb, base, off, s)
    elseif (feature == C.FEATURE_DMA_LOGGING_START or feature == C.FEATURE_DMA_LOGGING_STOP)
        and rest >= SPEC.structs.dma_logging.size then
      local _, head = add_struct(tree, "dma_logging", tvb, base, off, s)
      local size = SPEC.structs.dma_logging_range.size
      for i = 0, math.min(head.num_ranges, 4096) - 1 do
        local p = off + SPEC.structs.dma_logging.size + i * size
        if p + size > n then break end
        local e = add_struct(tree, "dma_logging_range", tvb, base, p, s)
        e:set_text(fmt("Range %d", i))
      end
    elseif feature == C.FEATURE_DMA_LOGGING_REPORT and rest >= SPEC.structs.dma_logging_report.size then
      add_struct(tree, "dma_logging_report", tvb, base, off, s)
      local boff = off + SPEC.structs.dma_logging_report.size
      if n > boff then add_data(tree, tvb, base, boff, n - boff, VF.bitmap) end
    else
      add_data(tree, tvb, base, off, rest)
    end
  elseif BITMAP_TAILS[tail] ~= nil then  -- a bitmap header struct when the flag says so, then the bitmap
    local struct, flag = BITMAP_TAILS[tail][1], BITMAP_TAILS[tail][2]
    if band(f.flags, flag) ~= 0 and rest >= SPEC.structs[struct].size then
      add_struct(tree, struct, tvb, base, off, s)
      local boff = off + SPEC.structs[struct].size
      if n > boff then add_data(tree, tvb, base, boff, n - boff, VF.bitmap) end
    else
      add_data(tree, tvb, base, off, rest)
    end
  elseif tail ~= "json" then
    add_data(tree, tvb, base, off, rest)
  end
end

-- The message's bytes are s, at offset base of tvb.  ctx: frame, conn, dir, fds ({kind, size} list), vflags;
-- frame = nil for decode-only use.  want_tree: the tree is not NULL; want_info: columns are being filled.
local function display_message(tvb, base, s, pinfo, tree, ctx, want_tree, want_info)
  local n = #s
  local frame = ctx.frame
  local root
  if want_tree then root = tree:add(vfu, tvb(base, n)) end
  local info_text
  if n < 16 then
    if want_tree then root:append_text(fmt(", %d bytes: shorter than the header", n)) end
    info_text = fmt("[%d bytes, shorter than the 16-byte header]", n)
  else
    local msg_id, cmd, size, flags, err = rd16(s, 1), rd16(s, 3), rd32(s, 5), rd32(s, 9), rd32(s, 13)
    local mtype = band(flags, C.FLAG_TYPE_MASK)
    local is_reply = mtype == 1
    local is_error = is_reply and band(flags, C.FLAG_ERROR) ~= 0
    local info = COMMANDS[cmd]
    local name = cmd_name(cmd)
    local kind
    if mtype == 0 then
      kind = band(flags, C.FLAG_NO_REPLY) ~= 0 and "command (no_reply)" or "command"
    elseif is_reply then
      kind = is_error and "error reply" or "reply"
    else
      kind = fmt("type%d", mtype)
    end
    if want_tree then
      root:append_text(fmt(", %s %s id=%d", name, kind, msg_id))
      root:add_le(VF.msg_id, tvb(base, 2))
      root:add_le(VF.command, tvb(base + 2, 2))
      root:add_le(VF.size, tvb(base + 4, 4))
      local fr = tvb(base + 8, 4)
      local ft = root:add_le(VF.flags, fr)
      ft:add_le(VF.flags_type, fr)
      ft:add_le(VF.flags_no_reply, fr)
      ft:add_le(VF.flags_error, fr)
      if band(flags, C.FLAG_RESERVED_MASK) ~= 0 then ft:add_le(VF.flags_reserved, fr) end
      if err ~= 0 or is_reply then root:add_le(VF.error, tvb(base + 12, 4)) end
    end
    local key
    if info ~= nil and not is_error then
      if is_reply then key = info.reply_layout else key = info.request_layout end
    end
    local lay = key and LAYOUTS[key]
    local f, caps, vdata
    if n > 16 then
      if lay ~= nil and n - 16 >= lay.size then
        local pt
        if want_tree then pt = root:add(LAYOUT_T[key], tvb(base + 16, n - 16)) end
        f = DECODE[key](s)
        if want_tree then
          for _, e in ipairs(LAYOUT_F[key]) do
            local fd = e.spec
            local r = tvb(base + 16 + fd.offset, fd.size)
            local it = pt:add_le(e.pf, r)
            if e.bits then for _, b in ipairs(e.bits) do it:add_le(b, r) end end
            if cmd == 16 and fd.name == "flags" then pt:add_le(VF.feature, r) end
          end
        end
        if lay.tail == "json" then
          caps, vdata = add_version_tail(want_tree and pt or nil, tvb, base, s, n)
        elseif want_tree then
          add_tail(pt, tvb, base, s, n, cmd, is_reply, lay, f)
        end
      elseif want_tree then
        local pt = root:add(VF.payload, tvb(base + 16, n - 16))
        if lay ~= nil then pt:append_text(fmt(" (%d bytes, %s needs %d)", n - 16, lay.title, lay.size)) end
      end
    end
    local rec = frame and fs_get(S.fs, frame)
    local rq, rs = rec and rec.req, rec and rec.resp
    if rs ~= nil and not pinfo.visited then rs = nil end
    local rtt = rq and rec.rtt
    if want_tree then
      if rq ~= nil then
        root:add(VF.request_in, rq):set_generated()
        local secs = floor(rtt)
        local nsecs = floor((rtt - secs) * 1e9 + 0.5)
        if nsecs >= 1000000000 then
          secs, nsecs = secs + 1, nsecs - 1000000000
        end
        root:add(VF.time, NSTime.new(secs, nsecs)):set_generated()
      end
      if rs ~= nil then root:add(VF.response_in, rs):set_generated() end
    end
    if want_info then
      local parts = {fmt("%s %s id=%d %dB", name, kind, msg_id, size)}
      if is_error then parts[#parts + 1] = fmt("%s(%d)", ERRNO[err] or fmt("errno %d", err), err) end
      if ctx.fds and #ctx.fds > 0 then
        local fl = {}
        for i, fd in ipairs(ctx.fds) do
          fl[i] = (E.FD_KINDS[fd.kind] or "unknown") .. (ueq(fd.size, 0) and "" or
            (" " .. (type(fd.size) == "number" and human_size(fd.size) or hex(fd.size))))
        end
        parts[#parts + 1] = "fds=[" .. concat(fl, ", ") .. "]"
      end
      if f ~= nil then
        local kf = key_fields(cmd, key, f, caps, vdata)
        if kf ~= "" then parts[#parts + 1] = kf end
      end
      if ctx.vflags and band(ctx.vflags, C.VF_TRUNCATED) ~= 0 then parts[#parts + 1] = "[truncated]" end
      if ctx.vflags and band(ctx.vflags, C.VF_CONTEXT) ~= 0 then parts[#parts + 1] = "[context]" end
      if rq ~= nil then
        local tt
        if rtt < 1e-3 then tt = fmt("%.0fµs", rtt * 1e6)
        elseif rtt < 1 then tt = fmt("%.2fms", rtt * 1e3)
        else tt = fmt("%.3fs", rtt) end
        parts[#parts + 1] = fmt("← %d (%s)", rq, tt)
      end
      if rs ~= nil then parts[#parts + 1] = fmt("→ %d", rs) end
      info_text = concat(parts, " ")
    end
  end
  if frame ~= nil and want_tree then
    add_findings(root, fnd_of(frame))
    if pinfo.visited then
      add_findings(root, S.late[frame])
      add_findings(root, S.endf[frame])
    end
  end
  return info_text
end

-- ======================================================================
-- The capture record (vfucap) and the reader's rules (capture/reader.py)
-- ======================================================================
local REC_MSG, REC_OPEN, REC_CLOSE, REC_NOTE, REC_RAW = 0, 1, 2, 3, 4
local VF_MORE = C.VF_MORE_FRAGMENTS

-- parse the VFUC header as capture/vfuc.py does; r.err says why a record is corrupt
local NO_FDS, NO_TLVS = {}, {}

local function parse_record(s, n, p2p)
  if n < C.VFUC_FIXED_SIZE then
    return {n = n, err = fmt("record too short for a VFUC header (%d bytes)", n)}
  end
  -- one byte() call and one constructor: this runs for every record
  local _, _, _, _, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16, b17, b18, b19, b20, b21, b22, b23, b24,
    b25, b26, b27, b28, b29, b30, b31, b32 = byte(s, 1, 32)
  local r = {n = n, magic = sub(s, 1, 4), version = b5, rt = b6, hdr_len = b7 + b8 * 256,
    conn = b9 + b10 * 256 + b11 * 65536 + b12 * 16777216, d = b13, flags = b14, n_fds = b15 + b16 * 256,
    msg_len = b17 + b18 * 256 + b19 * 65536 + b20 * 16777216, frag_off = b21 + b22 * 256 + b23 * 65536 + b24 * 16777216,
    msg_seq = b25 + b26 * 256 + b27 * 65536 + b28 * 16777216, fd_ent_len = b29 + b30 * 256, reserved = b31 + b32 * 256,
    fast = false, dir = false, payload_off = 0, fds = NO_FDS, tlvs = NO_TLVS, err = false, fd_end = 0}
  -- the reader's fast path: a whole message behind the writer's direction prefix
  if (p2p == 0 or p2p == 1) and b6 == REC_MSG and r.hdr_len == C.VFUC_FIXED_SIZE and r.n_fds == 0
      and r.frag_off == 0 and band(b14, VF_MORE) == 0 and r.magic == C.VFUC_MAGIC then
    r.fast = true
    r.dir = p2p
    r.payload_off = C.VFUC_FIXED_SIZE
    return r
  end
  if r.magic ~= C.VFUC_MAGIC then
    r.err = fmt("bad VFUC magic %q", r.magic)
  elseif r.version < 1 then
    r.err = fmt("VFUC version %d unknown", r.version)
  elseif r.hdr_len < C.VFUC_FIXED_SIZE or r.hdr_len > n then
    r.err = fmt("VFUC hdr_len %d out of range", r.hdr_len)
  elseif r.n_fds > 0 and r.fd_ent_len < C.VFUC_FD_ENTRY_SIZE then
    r.err = fmt("VFUC fd_ent_len %d too small", r.fd_ent_len)
  elseif C.VFUC_FIXED_SIZE + r.n_fds * r.fd_ent_len > r.hdr_len then
    r.err = fmt("%d fd entries run past hdr_len", r.n_fds)
  end
  if r.err then return r end
  local fds = {}
  local off = C.VFUC_FIXED_SIZE
  for i = 1, r.n_fds do
    fds[i] = {off = off, kind = byte(s, off + 1), status = rd32(s, off + 5), size = rd64(s, off + 9),
      ino = rd64(s, off + 17)}
    off = off + r.fd_ent_len
  end
  local tlvs = {}
  local fd_end = C.VFUC_FIXED_SIZE + r.n_fds * r.fd_ent_len
  off = fd_end
  while off + 4 <= r.hdr_len do
    local tag, len = rd16(s, off + 1), rd16(s, off + 3)
    if off + 4 + len > r.hdr_len then
      r.err = fmt("VFUC TLV %d runs past hdr_len", tag)
      return r
    end
    tlvs[#tlvs + 1] = {off = off, tag = tag, len = len, value = sub(s, off + 5, off + 4 + len)}
    off = off + 4 + len + (-(4 + len)) % 4
  end
  for _, t in ipairs(tlvs) do
    if t.tag == 5 and t.len >= 4 then
      local idx = rd16(t.value, 1)
      if fds[idx + 1] ~= nil then fds[idx + 1].path = sub(t.value, 5) end
    end
  end
  r.fds, r.tlvs = fds, tlvs
  r.fd_end = fd_end
  r.payload_off = r.hdr_len
  if r.d == 0 or r.d == 1 then r.dir = r.d end
  if (r.rt == REC_MSG or r.rt == REC_RAW) and r.dir == false then
    r.err = "message record without direction"
  end
  return r
end

local function tlv(r, tag)
  for _, t in ipairs(r.tlvs or {}) do
    if t.tag == tag then return t end
  end
  return nil
end

-- the VFUC header; fields at their usual value (magic, version 1, hdr_len, fd_ent_len, reserved, clear
-- flag bits) only when they say something
local function display_record(tvb, r, root)
  local n = r.n
  if n < C.VFUC_FIXED_SIZE then return end
  root:append_text(fmt(", %s, connection %d", E.REC_TYPE_NAMES[r.rt] or fmt("type %d", r.rt), r.conn))
  if r.magic ~= C.VFUC_MAGIC then root:add(RF.magic, tvb(0, 4)) end
  if r.version ~= C.VFUC_VERSION then
    local vi = root:add(RF.version, tvb(4, 1))
    if r.version > C.VFUC_VERSION then vi:add_proto_expert_info(EX_VFUC_NEWER) end
  end
  root:add(RF.rec_type, tvb(5, 1))
  local fixed = C.VFUC_FIXED_SIZE + r.n_fds * C.VFUC_FD_ENTRY_SIZE
  if r.hdr_len ~= C.VFUC_FIXED_SIZE then root:add_le(RF.hdr_len, tvb(6, 2)) end
  root:add_le(RF.conn, tvb(8, 4))
  root:add(RF.dir, tvb(12, 1))
  local ft = root:add(RF.flags, tvb(13, 1))
  if r.flags ~= 0 then for _, b in ipairs(RF_FLAG_BITS) do ft:add(b, tvb(13, 1)) end end
  root:add_le(RF.num_fds, tvb(14, 2))
  root:add_le(RF.msg_len, tvb(16, 4))
  if r.frag_off ~= 0 or band(r.flags, VF_MORE) ~= 0 then root:add_le(RF.frag_off, tvb(20, 4)) end
  root:add_le(RF.msg_seq, tvb(24, 4))
  if r.n_fds > 0 or r.fd_ent_len ~= C.VFUC_FD_ENTRY_SIZE then root:add_le(RF.fd_ent_len, tvb(28, 2)) end
  if r.reserved ~= 0 then root:add_le(RF.reserved, tvb(30, 2)) end
  if fixed < 0 then return end
  for i, fd in ipairs(r.fds or {}) do
    local len = math.min(r.fd_ent_len, n - fd.off)
    if len < C.VFUC_FD_ENTRY_SIZE then break end
    local t = root:add(RF.fd, tvb(fd.off, len))
    t:set_text(safe(fmt("fd[%d]: %s, size %s, ino %s%s", i - 1, E.FD_KINDS[fd.kind] or "unknown", dec(fd.size),
      dec(fd.ino), fd.path and (", " .. fd.path) or "")))
    t:add(RF.fd_kind, tvb(fd.off, 1))
    t:add_le(RF.fd_reserved, tvb(fd.off + 1, 3))
    t:add_le(RF.fd_status_flags, tvb(fd.off + 4, 4))
    t:add_le(RF.fd_size, tvb(fd.off + 8, 8))
    t:add_le(RF.fd_ino, tvb(fd.off + 16, 8))
    if fd.path then t:add(RF.fd_path, safe(fd.path)):set_generated() end
  end
  for _, t in ipairs(r.tlvs or {}) do
    local tt = root:add(RF.tlv, tvb(t.off, 4 + t.len))
    tt:set_text(fmt("TLV %s (%d bytes)", E.TLV_NAMES[t.tag] or fmt("%d", t.tag), t.len))
    tt:add_le(RF.tlv_type, tvb(t.off, 2))
    tt:add_le(RF.tlv_len, tvb(t.off + 2, 2))
    local vr = t.len > 0 and tvb(t.off + 4, t.len) or nil
    if vr == nil then
      -- empty value
    elseif t.tag == 1 then tt:add(RF.socket_path, vr)
    elseif (t.tag == 2 or t.tag == 3) and t.len >= 12 then
      local who = t.tag == 2 and "client" or "server"
      tt:add_le(RF[who .. "_pid"], tvb(t.off + 4, 4))
      tt:add_le(RF[who .. "_uid"], tvb(t.off + 8, 4))
      tt:add_le(RF[who .. "_gid"], tvb(t.off + 12, 4))
    elseif t.tag == 4 then tt:add(RF.note, vr)
    elseif t.tag == 5 and t.len >= 4 then
      tt:add_le(RF.fd_index, tvb(t.off + 4, 2))
      if t.len > 4 then tt:add(RF.fd_path, tvb(t.off + 8, t.len - 4)) end
    elseif t.tag == 6 and t.len >= 4 then tt:add_le(RF.proxy_errno, tvb(t.off + 4, 4))
    elseif t.tag == 7 and t.len >= 4 then tt:add_le(RF.twin_of, tvb(t.off + 4, 4))
    else tt:add(RF.tlv_value, vr) end
  end
end

local function set_endpoints(pinfo, conn, d)
  if d == C2S then
    pinfo.cols.src = fmt("client#%d", conn)
    pinfo.cols.dst = fmt("server#%d", conn)
  elseif d == S2C then
    pinfo.cols.src = fmt("server#%d", conn)
    pinfo.cols.dst = fmt("client#%d", conn)
  else
    pinfo.cols.src = fmt("proxy#%d", conn)
    pinfo.cols.dst = ""
  end
end

local function fds_ctx(r)
  local list = {}
  for i, fd in ipairs(r.fds or {}) do list[i] = {kind = fd.kind, size = fd.size} end
  return list
end

-- message bytes (whole record at offset base of tvb, or reassembled) -> analysis (first pass), tree, Info
local function message_event(pinfo, tree, mtvb, base, s, r, frame, first, ts, rel, wire, vflags, fds, want_tree,
                             want_info)
  if first then
    event_time(ts)
    analyze_message({frame = frame, ts = ts, rel = rel, conn = r.conn, dir = r.dir, s = s, n = #s, wire = wire,
      nfds = #fds, fds = fds, vflags = vflags})
  end
  if want_tree or want_info then
    local info = display_message(mtvb, base, s, pinfo, tree, {frame = frame, conn = r.conn, dir = r.dir, fds = fds,
      vflags = vflags}, want_tree, want_info)
    if want_info then pinfo.cols.info = fmt("#%d %s %s", r.conn, ARROW[r.dir], info) end
  end
end

local function dissect_record(tvb, pinfo, tree)
  local n = tvb:len()
  local frame = pinfo.number
  local first = not pinfo.visited
  if not first then finish() end
  local ts, rel = pinfo.abs_ts, pinfo.rel_ts
  local s = tvb:raw(0, n)
  local r = parse_record(s, n, pinfo.p2p_dir)
  local root = tree:add(vfucap, tvb())
  -- a NULL tree (first pass of tshark -2, summaries) has items of length 0; Info is "(info)" when no
  -- columns are being filled: then only the analysis runs
  local want_tree = root.len > 0 or n == 0
  local want_info = tostring(pinfo.cols.info) ~= "(info)"
  if want_info then pinfo.cols.protocol = "vfio-user" end
  if want_tree then display_record(tvb, r, root) end
  local conn = r.conn or 0
  if want_info then set_endpoints(pinfo, conn, r.dir) end
  if r.err then
    local text = CORRUPT_PREFIX .. r.err
    if first then
      event_time(ts)
      analyze_note(frame, text)
    end
    if want_tree then
      root:add(RF.corrupt, safe(r.err)):set_generated()
      add_findings(root, fnd_of(frame))
    end
    if want_info then pinfo.cols.info = fmt("[%s]", safe(text)) end
    return
  end
  local rt = r.rt
  if rt == REC_MSG or rt == REC_RAW then
    local poff = r.payload_off
    local plen = n - poff
    local flags = r.flags
    if not r.fast and (r.frag_off ~= 0 or band(flags, VF_MORE) ~= 0) then
      -- a fragment: reassemble (first pass), or read what the first pass decided
      if want_tree and plen > 0 then root:add(RF.payload, tvb(poff, plen)) end
      if first then
        local key = fmt("%d:%d:%d", r.conn, r.dir, r.msg_seq)
        local p = S.partial[key]
        local bad
        if p == nil then
          if r.frag_off ~= 0 then
            bad = fmt("fragment at offset %d without its start", r.frag_off)
          else
            S.partial[key] = {r = r, parts = {sub(s, poff + 1)}, have = plen, frames = {frame}}
          end
        elseif r.frag_off ~= p.have then
          S.partial[key] = nil
          bad = fmt("fragment at offset %d, expected %d", r.frag_off, p.have)
        else
          p.parts[#p.parts + 1] = sub(s, poff + 1)
          p.have = p.have + plen
          p.frames[#p.frames + 1] = frame
          if band(flags, VF_MORE) == 0 then
            S.partial[key] = nil
            local fr = p.r
            local data = concat(p.parts)
            S.reasm[frame] = {data = ByteArray.new(data, true), len = #data, frames = p.frames,
              flags = band(bor(fr.flags, flags), bnot(VF_MORE)), fds = fds_ctx(fr),
              msg_len = fr.msg_len ~= 0 and fr.msg_len or #data, note = tlv(fr, 4)}
            for _, f in ipairs(p.frames) do
              if f ~= frame then S.frag_in[f] = frame end
            end
          end
        end
        if bad then
          S.corrupt[frame] = CORRUPT_PREFIX .. bad
          event_time(ts)
          analyze_note(frame, S.corrupt[frame])
        end
      end
      local ra = S.reasm[frame]
      if S.corrupt[frame] then
        if want_tree then
          root:add(RF.corrupt, sub(S.corrupt[frame], #CORRUPT_PREFIX + 1)):set_generated()
          add_findings(root, fnd_of(frame))
        end
        if want_info then pinfo.cols.info = fmt("[%s]", S.corrupt[frame]) end
        return
      end
      if ra == nil then
        local rin = S.frag_in[frame]
        if want_tree then
          if rin ~= nil then
            root:add(RF.reassembled_in, rin):set_generated()
          elseif pinfo.visited then
            root:add_proto_expert_info(EX_INCOMPLETE)
          end
        end
        if want_info then
          pinfo.cols.info = fmt("#%d %s [fragment at offset %d of %d]%s", r.conn, ARROW[r.dir], r.frag_off,
            r.msg_len, rin and fmt(" reassembled in %d", rin) or "")
        end
        return
      end
      -- the last fragment: the whole message
      if want_tree then
        root:add(RF.reassembled_length, ra.len):set_generated()
        root:add(RF.fragment_count, #ra.frames):set_generated()
        for _, f in ipairs(ra.frames) do root:add(RF.fragment, f):set_generated() end
      end
      if rt == REC_MSG then
        local mtvb, mbase = tvb, n  -- an empty message: a zero-length range at the end of this record
        if want_tree and ra.len > 0 then mtvb, mbase = ra.data:tvb("Reassembled vfio-user message"), 0 end
        message_event(pinfo, tree, mtvb, mbase, ra.data:raw(), r, frame, first, ts, rel, ra.msg_len, ra.flags,
          ra.fds, want_tree, want_info)
      else
        if first then
          event_time(ts)
          analyze_raw(frame, r.conn, r.dir, ra.note and ra.note.value or "")
        end
        if want_tree then add_findings(root, fnd_of(frame)) end
        if want_info then pinfo.cols.info = fmt("#%d %s raw %d bytes", r.conn, ARROW[r.dir], ra.len) end
      end
      return
    end
    local data = sub(s, poff + 1)
    local wire = r.msg_len ~= 0 and r.msg_len or #data
    if rt == REC_MSG then
      message_event(pinfo, tree, tvb, poff, data, r, frame, first, ts, rel, wire, flags, fds_ctx(r), want_tree,
        want_info)
    else
      if first then
        event_time(ts)
        local nt = tlv(r, 4)
        analyze_raw(frame, r.conn, r.dir, nt and nt.value or "")
      end
      if want_tree then
        if plen > 0 then root:add(RF.payload, tvb(poff, plen)) end
        add_findings(root, fnd_of(frame))
      end
      if want_info then pinfo.cols.info = fmt("#%d %s raw %d bytes", r.conn, ARROW[r.dir], plen) end
    end
  elseif rt == REC_OPEN then
    local tw = tlv(r, 7)
    local twin = tw and tw.len >= 4 and rd32(tw.value, 1) or nil
    if first then
      event_time(ts)
      analyze_open(frame, r.conn, twin)
    end
    if want_info then
      local sp = tlv(r, 1)
      local cc = tlv(r, 2)
      pinfo.cols.info = fmt("#%d conn-open %s%s%s", r.conn, sp and safe(sp.value) or "",
        cc and cc.len >= 12 and fmt(" (client pid %d)", rd32(cc.value, 1)) or "",
        twin and fmt(" twin of #%d", twin) or "")
    end
  elseif rt == REC_CLOSE then
    if first then
      event_time(ts)
      analyze_close(frame, ts, r.conn, r.dir or nil)
    end
    if want_info then pinfo.cols.info = fmt("#%d conn-close%s", r.conn, r.dir and (" " .. DIR_WORD[r.dir]) or "") end
  elseif rt == REC_NOTE then
    local nt = tlv(r, 4)
    local text = nt and nt.value or ""
    if first then
      event_time(ts)
      analyze_note(frame, text)
    end
    if want_tree then add_findings(root, fnd_of(frame)) end
    if want_info then pinfo.cols.info = fmt("#%d note: %s", r.conn, safe(text)) end
  elseif want_info then
    pinfo.cols.info = fmt("#%d record type %d (newer writer; skipped)", r.conn, rt)
  end
end

function vfucap.dissector(tvb, pinfo, tree)
  local ok, err = pcall(dissect_record, tvb, pinfo, tree)
  if not ok then
    local it = tree:add(VF.internal_error, tostring(err))
    it:add_proto_expert_info(EX_INTERNAL, tostring(err))
  end
  return tvb:len()
end

-- vfio_user on its own (e.g. text2pcap -P vfio_user): decode only, no state
function vfu.dissector(tvb, pinfo, tree)
  local ok, err = pcall(function()
    pinfo.cols.protocol = "vfio-user"
    local s = tvb:raw(0, tvb:len())
    pinfo.cols.info = display_message(tvb, 0, s, pinfo, tree, {}, true, true)
  end)
  if not ok then
    local it = tree:add(VF.internal_error, tostring(err))
    it:add_proto_expert_info(EX_INTERNAL, tostring(err))
  end
  return tvb:len()
end
