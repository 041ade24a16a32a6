--
-- Two protocols:
--   vfucap    the capture record: exported-PDU payload named "vfucap" = the VFUC pseudo-header
--             (connection, direction, fds, fragments, TLVs) + bytes
--   vfio_user one vfio-user message: header, every command's payload fields, request/response links
--             and response time; the engine's findings
--
-- The plugin decodes and displays; it judges nothing.  The findings are those of vfudissect's engine,
-- stored in the capture as FINDING records: each shows as a frame of its own and, on a second pass
-- (tshark -2, or the GUI, which re-dissects), as the same expert item on every frame it names.  A capture
-- without them (its first record is not a VERDICTS record) says so on frame 1; `vfudissect annotate IN -w
-- OUT` adds them.
--
-- Use:  tshark -r capture.pcapng -X lua_script:vfio_user.lua [-2]
--       or `vfudissect lua --install` (the personal plugin folder); given both ways, it loads once.
-- Response times: Statistics > vfio-user > Response times (GUI), `tshark -q -z vfio_user,srt`.
-- Every protocol table below (SPEC) is generated from vfudissect/spec.py and core/findings.py.

-- loaded once, whichever way it was given (plugin folder and -X lua_script): plugins have environments of
-- their own, package.loaded is shared; a vfucap dissector already there (an older copy) stays
if package.loaded.vfudissect_vfio_user then return end
do
  local ok, other = pcall(Dissector.get, "vfucap")
  if ok and other ~= nil then return end
end
package.loaded.vfudissect_vfio_user = true

--@SPEC@--

local C, E, REC, TLV = SPEC.C, SPEC.enums, SPEC.rec_types, SPEC.tlvs
local band, bor, bnot = bit32.band, bit32.bor, bit32.bnot
local byte, sub, fmt, find, concat, lower = string.byte, string.sub, string.format, string.find, table.concat,
    string.lower
local floor, tremove = math.floor, table.remove

local C2S, S2C = SPEC.dir_codes.c2s, SPEC.dir_codes.s2c
local OTHER = {[C2S] = S2C, [S2C] = C2S}
local DIR_WORD = {[C2S] = "c2s", [S2C] = "s2c"}
local ARROW = {[C2S] = "C→S", [S2C] = "S→C"}
local TWO32 = 4294967296
local TWO53 = 9007199254740992
local COMMANDS, LAYOUTS = SPEC.commands, SPEC.layouts
local NO_REPLY_KEPT = C.NO_REPLY_KEPT  -- no_reply commands kept per id to pair stray replies with (spec.py)

-- bit tests by arithmetic on the hot path (a bit32 call per test costs more than the rest of the test)
local function has(x, bit) return x % (bit + bit) >= bit end
local TYPE_MOD = C.FLAG_TYPE_MASK + 1  -- the type is the low bits of the flags
assert(TYPE_MOD % 2 == 0 and band(C.FLAG_TYPE_MASK, TYPE_MOD) == 0)

-- ======================================================================
-- Integers for display.  A u64 below 2^53 is a Lua number; a larger one a UInt64.
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
  if hi < 2097152 then return hi * TWO32 + lo end
  return UInt64.new(lo, hi)
end

local function dec(a)
  return type(a) == "number" and fmt("%d", a) or tostring(a)
end

local function hex(a)
  return type(a) == "number" and fmt("0x%x", a) or "0x" .. (string.gsub(a:tohex(), "^0+", ""))
end

-- text for Wireshark's labels: bytes decoded as Python's decode("utf-8", "replace") does (each maximal invalid
-- subpart becomes U+FFFD), control characters escaped
local UTF8_LEAD = {}  -- lead byte -> {continuation bytes, range of the first one}
for c = 0xC2, 0xDF do UTF8_LEAD[c] = {1, 0x80, 0xBF} end
UTF8_LEAD[0xE0] = {2, 0xA0, 0xBF}
for c = 0xE1, 0xEF do UTF8_LEAD[c] = {2, 0x80, 0xBF} end
UTF8_LEAD[0xED] = {2, 0x80, 0x9F}
UTF8_LEAD[0xF0] = {3, 0x90, 0xBF}
for c = 0xF1, 0xF3 do UTF8_LEAD[c] = {3, 0x80, 0xBF} end
UTF8_LEAD[0xF4] = {3, 0x80, 0x8F}
local REPLACEMENT = "\239\191\189"

local function utf8_repair(s)
  if not find(s, "[\128-\255]") then return s end
  local out, i, n, start = {}, 1, #s, 1
  while i <= n do
    if byte(s, i) < 0x80 then
      i = i + 1
    else
      local lead = UTF8_LEAD[byte(s, i)]
      local j, ok = i + 1, lead ~= nil
      if ok then
        for k = 1, lead[1] do
          local ck = byte(s, j)
          if ck == nil or ck < (k == 1 and lead[2] or 0x80) or ck > (k == 1 and lead[3] or 0xBF) then
            ok = false
            break
          end
          j = j + 1
        end
      end
      if ok then
        i = j
      else
        out[#out + 1] = sub(s, start, i - 1)
        out[#out + 1] = REPLACEMENT
        i, start = j, j
      end
    end
  end
  out[#out + 1] = sub(s, start)
  return concat(out)
end

local function safe(s)
  s = utf8_repair(s)
  if find(s, "%c") then s = string.gsub(s, "%c", function(c) return fmt("\\x%02x", byte(c)) end) end
  return s
end

-- an expert item's text: Wireshark keeps 239 bytes of it; longer texts are cut at a character with "…"
local EXPERT_MAX = 239
local function expert_text(s)
  if #s <= EXPERT_MAX then return s end
  local cut = EXPERT_MAX - 3
  while cut > 0 and band(byte(s, cut + 1), 0xC0) == 0x80 do cut = cut - 1 end
  return sub(s, 1, cut) .. "…"
end

local function bits_text(value, names)
  local parts, masks, known = {}, {}, 0
  for mask in pairs(names) do masks[#masks + 1] = mask end
  table.sort(masks)
  for _, mask in ipairs(masks) do
    known = bor(known, mask)
    if band(value, mask) ~= 0 then parts[#parts + 1] = names[mask] end
  end
  local rest = band(value, bnot(known))
  if rest ~= 0 then parts[#parts + 1] = fmt("0x%x", rest) end
  if #parts == 0 then return "0" end
  return concat(parts, "|")
end

local function cmd_name(cmd)
  local info = COMMANDS[cmd]
  return info and info.name or fmt("CMD_%d", cmd)
end

-- ======================================================================
-- Protocols, fields, experts, preferences
-- ======================================================================
local vfucap = Proto("vfucap", "vfudissect capture record (VFUC)")
local vfu = Proto("vfio_user", "vfio-user")
local BY_ABBR = {}  -- abbreviation -> ProtoField (a fields-only run names them)

local function field(list, pf, abbr)
  list[#list + 1] = pf
  BY_ABBR[abbr] = pf
  return pf
end

local function flag_fields(list, prefix, bitnames, width)
  local out, masks = {}, {}
  for mask in pairs(bitnames) do masks[#masks + 1] = mask end
  table.sort(masks)
  for _, mask in ipairs(masks) do
    local abbr = prefix .. "." .. lower(bitnames[mask])
    out[#out + 1] = field(list, ProtoField.bool(abbr, bitnames[mask], width, nil, mask), abbr)
  end
  return out
end

-- ---- vfucap: the record
local RF, rf_list = {}, {}
local function rf(key, ctor, abbr, ...)
  RF[key] = field(rf_list, ctor(abbr, ...), abbr)
end
local DIR_NAMES = {[C2S] = "client to server", [S2C] = "server to client", [C.VFUC_DIR_NONE] = "none"}
rf("magic", ProtoField.string, "vfucap.magic", "Magic")
rf("version", ProtoField.uint8, "vfucap.version", "Version")
rf("rec_type", ProtoField.uint8, "vfucap.rec_type", "Record type", base.DEC, E.REC_TYPE_NAMES)
rf("hdr_len", ProtoField.uint16, "vfucap.hdr_len", "Header length")
rf("conn", ProtoField.uint32, "vfucap.conn", "Connection")
rf("dir", ProtoField.uint8, "vfucap.dir", "Direction", base.DEC, DIR_NAMES)
rf("flags", ProtoField.uint8, "vfucap.flags", "Flags", base.HEX)
local RF_FLAG_BITS = flag_fields(rf_list, "vfucap.flags", E.VFUC_FLAGS, 8)
rf("num_fds", ProtoField.uint16, "vfucap.num_fds", "Number of fds")
rf("msg_len", ProtoField.uint32, "vfucap.msg_len", "Message length")
rf("frag_off", ProtoField.uint32, "vfucap.frag_off", "Fragment offset")
rf("msg_seq", ProtoField.uint32, "vfucap.msg_seq", "Message sequence")
rf("fd_ent_len", ProtoField.uint16, "vfucap.fd_ent_len", "fd entry length")
rf("reserved", ProtoField.uint16, "vfucap.reserved", "Reserved", base.HEX)
rf("fd", ProtoField.none, "vfucap.fd", "fd")
rf("fd_kind", ProtoField.uint8, "vfucap.fd.kind", "Kind", base.DEC, E.FD_KINDS)
rf("fd_reserved", ProtoField.uint24, "vfucap.fd.reserved", "Reserved", base.HEX)
rf("fd_status_flags", ProtoField.uint32, "vfucap.fd.status_flags", "Status flags (F_GETFL)", base.HEX)
rf("fd_size", ProtoField.uint64, "vfucap.fd.size", "Size")
rf("fd_ino", ProtoField.uint64, "vfucap.fd.ino", "Inode")
rf("fd_path", ProtoField.string, "vfucap.fd.path", "Path")
rf("tlv", ProtoField.none, "vfucap.tlv", "TLV")
rf("tlv_type", ProtoField.uint16, "vfucap.tlv.type", "Type", base.DEC, E.TLV_NAMES)
rf("tlv_len", ProtoField.uint16, "vfucap.tlv.len", "Length")
rf("tlv_value", ProtoField.bytes, "vfucap.tlv.value", "Value")
rf("socket_path", ProtoField.string, "vfucap.socket_path", "Socket path")
for _, who in ipairs({"client", "server"}) do
  for _, what in ipairs({"pid", "uid", "gid"}) do
    rf(who .. "_" .. what, ProtoField.uint32, "vfucap." .. who .. "." .. what, who .. " " .. what)
  end
end
rf("note", ProtoField.string, "vfucap.note", "Note")
rf("fd_index", ProtoField.uint16, "vfucap.fd_path.index", "fd index")
rf("proxy_errno", ProtoField.uint32, "vfucap.proxy_errno", "Proxy errno", base.DEC, E.ERRNO_NAMES)
rf("twin_of", ProtoField.uint32, "vfucap.twin_of", "Twin socket of connection")
rf("engine", ProtoField.string, "vfucap.engine", "Judged by")
rf("timeout", ProtoField.string, "vfucap.timeout", "Reply timeout the verdicts were judged with (s)")
rf("payload", ProtoField.bytes, "vfucap.payload", "Payload")
rf("fragment", ProtoField.framenum, "vfucap.fragment", "Fragment", base.NONE)
rf("fragment_count", ProtoField.uint32, "vfucap.fragment.count", "Fragment count")
rf("reassembled_in", ProtoField.framenum, "vfucap.reassembled_in", "Reassembled in", base.NONE)
rf("reassembled_length", ProtoField.uint32, "vfucap.reassembled.length", "Reassembled length")
rf("incomplete", ProtoField.string, "vfucap.fragment.incomplete", "Incomplete message")
rf("corrupt", ProtoField.string, "vfucap.corrupt", "Corrupt record")
vfucap.fields = rf_list

-- ---- vfio_user: the message and the findings on it
local VF, vf_list = {}, {}
local function vf(key, ctor, abbr, ...)
  VF[key] = field(vf_list, ctor(abbr, ...), abbr)
  return VF[key]
end
local SEVERITY_NAMES = {}
for rank, name in ipairs(SPEC.severities) do SEVERITY_NAMES[rank - 1] = name end
vf("msg_id", ProtoField.uint16, "vfio_user.msg_id", "Message ID")
vf("command", ProtoField.uint16, "vfio_user.command", "Command", base.DEC, E.COMMAND_NAMES)
vf("size", ProtoField.uint32, "vfio_user.size", "Message size")
vf("flags", ProtoField.uint32, "vfio_user.flags", "Flags", base.HEX)
vf("flags_type", ProtoField.uint32, "vfio_user.flags.type", "Type", base.DEC, E.MSG_TYPE_NAMES, C.FLAG_TYPE_MASK)
vf("flags_no_reply", ProtoField.bool, "vfio_user.flags.no_reply", "No_reply", 32, nil, C.FLAG_NO_REPLY)
vf("flags_error", ProtoField.bool, "vfio_user.flags.error", "Error", 32, nil, C.FLAG_ERROR)
vf("flags_reserved", ProtoField.uint32, "vfio_user.flags.reserved", "Reserved", base.HEX, nil, C.FLAG_RESERVED_MASK)
local ERRNO_VS = {[0] = "none"}
for k, v in pairs(E.ERRNO_NAMES) do ERRNO_VS[k] = v end
vf("error", ProtoField.uint32, "vfio_user.error", "Error (errno)", base.DEC, ERRNO_VS)
vf("request_in", ProtoField.framenum, "vfio_user.request_in", "Request in", base.NONE, frametype.REQUEST)
vf("response_in", ProtoField.framenum, "vfio_user.response_in", "Response in", base.NONE, frametype.RESPONSE)
vf("time", ProtoField.relative_time, "vfio_user.time", "Response time")
vf("payload", ProtoField.bytes, "vfio_user.payload", "Payload")
vf("data", ProtoField.bytes, "vfio_user.data", "Data")
vf("version_data", ProtoField.string, "vfio_user.version.data", "Version data (JSON)")
vf("caps", ProtoField.none, "vfio_user.caps", "Capabilities")
vf("caps_member", ProtoField.string, "vfio_user.caps.member", "Member")
vf("feature", ProtoField.uint32, "vfio_user.device_feature.feature", "Feature", base.DEC, E.FEATURES, C.FEATURE_MASK)
vf("migration_flags", ProtoField.uint64, "vfio_user.device_feature.migration_flags", "Migration flags", base.HEX)
vf("bitmap", ProtoField.bytes, "vfio_user.bitmap", "Bitmap")
vf("irq_bools", ProtoField.bytes, "vfio_user.irq_set.data", "Data (one bool per interrupt)")
vf("finding", ProtoField.string, "vfio_user.finding", "Finding")
vf("finding_severity", ProtoField.uint8, "vfio_user.finding.severity", "Severity", base.DEC, SEVERITY_NAMES)
vf("finding_text", ProtoField.string, "vfio_user.finding.text", "Text")
vf("finding_frame", ProtoField.framenum, "vfio_user.finding.frame", "Frame", base.NONE)
vf("finding_conn", ProtoField.uint32, "vfio_user.finding.conn", "Connection")
vf("finding_record", ProtoField.framenum, "vfio_user.finding.record", "Finding record", base.NONE)
vf("internal_error", ProtoField.string, "vfio_user.internal_error", "Plugin error")
local MSG_FLAG_BITS = {VF.flags_type, VF.flags_no_reply, VF.flags_error}
local VF_MIGFLAG_BITS = flag_fields(vf_list, "vfio_user.device_feature.migration_flags", E.MIGRATION_FLAGS, 64)

-- payload layouts: vfio_user.<layout key> (subtree), .<field>, flag bits below them
local LAYOUT_F, LAYOUT_T = {}, {}
for _, key in ipairs(SPEC.layout_order) do
  local lay = LAYOUTS[key]
  LAYOUT_T[key] = field(vf_list, ProtoField.none("vfio_user." .. key, lay.title), "vfio_user." .. key)
  local entries = {}
  for _, f in ipairs(lay.fields) do
    local abbr = "vfio_user." .. key .. "." .. f.name
    local b = f.hex and base.HEX or base.DEC
    local vals = f.size <= 4 and f.values and E[f.values] or nil
    local ctor = ({ProtoField.uint8, ProtoField.uint16, nil, ProtoField.uint32})[f.size] or ProtoField.uint64
    local pf = field(vf_list, ctor(abbr, f.name, b, f.size <= 4 and vals or nil, nil, f.desc), abbr)
    local bits = f.bits and flag_fields(vf_list, abbr, E[f.bits], f.size * 8) or nil
    entries[#entries + 1] = {spec = f, pf = pf, bits = bits, at = 16 + f.offset}
  end
  LAYOUT_F[key] = entries
end

-- variable-tail structures: vfio_user.<struct>.<field>
local STRUCT_F, STRUCT_T = {}, {}
for _, key in ipairs(SPEC.struct_order) do
  local st = SPEC.structs[key]
  STRUCT_T[key] = field(vf_list, ProtoField.none("vfio_user." .. key, st.title), "vfio_user." .. key)
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
    entries[#entries + 1] = {spec = f, pf = field(vf_list, pf, abbr)}
  end
  STRUCT_F[key] = entries
end

-- capabilities: vfio_user.caps.<path> for every key of the schema
local CAPS, CAP_F = SPEC.capabilities, {}
for _, path in ipairs(SPEC.capability_order) do
  local k = CAPS[path]
  local abbr = "vfio_user.caps." .. path
  local pf
  if k.kind == "int" then pf = ProtoField.int64(abbr, path, base.DEC, nil, nil, k.desc)
  elseif k.kind == "bool" then pf = ProtoField.bool(abbr, path, base.NONE, nil, nil, k.desc)
  else pf = ProtoField.none(abbr, path, k.desc) end
  CAP_F[path] = field(vf_list, pf, abbr)
end
vfu.fields = vf_list

-- one expert per finding code, vfio_user.finding.<code>, severity and group from the catalogue; codes a newer
-- engine wrote are vfio_user.finding.other.<severity>
local GROUPS = {
  sequence = expert.group.SEQUENCE, protocol = expert.group.PROTOCOL, malformed = expert.group.MALFORMED,
  response_code = expert.group.RESPONSE_CODE, request_code = expert.group.REQUEST_CODE,
  undecoded = expert.group.UNDECODED,
}
local SEVERITIES = {note = expert.severity.NOTE, warning = expert.severity.WARN, error = expert.severity.ERROR}
local EXPERT, SEVERITY_OF, experts = {}, {}, {}
for _, f in ipairs(SPEC.findings) do
  local abbr = "vfio_user.finding." .. lower(f.code)
  EXPERT[f.code] = ProtoExpert.new(abbr, f.title, GROUPS[f.group], SEVERITIES[f.severity])
  SEVERITY_OF[f.code] = f.severity
  BY_ABBR[abbr] = false  -- an expert, added whatever the run asks for
  experts[#experts + 1] = EXPERT[f.code]
end
local EX_OTHER = {}
for _, sev in ipairs(SPEC.severities) do
  local abbr = "vfio_user.finding.other." .. sev
  EX_OTHER[sev] = ProtoExpert.new(abbr, "finding of a newer engine", expert.group.PROTOCOL, SEVERITIES[sev])
  BY_ABBR[abbr] = false
  experts[#experts + 1] = EX_OTHER[sev]
end
local EX_INTERNAL = ProtoExpert.new("vfio_user.internal_error.expert", "vfio_user Lua plugin error",
  expert.group.MALFORMED, expert.severity.ERROR)
BY_ABBR["vfio_user.internal_error.expert"] = false
experts[#experts + 1] = EX_INTERNAL
vfu.experts = experts
local EX_NO_VERDICTS = ProtoExpert.new("vfucap.no_verdicts", "capture without stored findings",
  expert.group.COMMENTS_GROUP or expert.group.PROTOCOL, expert.severity.NOTE)
BY_ABBR["vfucap.no_verdicts"] = false
vfucap.experts = {EX_NO_VERDICTS}
local NO_VERDICTS_TEXT = "no vfio-user findings stored in this capture (its first record is not a VERDICTS "
  .. "record): add them with `vfudissect annotate IN -w OUT`"

vfu.prefs.show_payload = Pref.bool("Show data payloads", true,
  "Show the data bytes of region/DMA/migration reads and writes in the tree")
vfu.prefs.fields_only = Pref.bool("Fields-only runs build only their fields", true,
  "tshark -T fields (Wireshark 4.0 builds the whole tree for it): build only the vfio_user/vfucap fields "
  .. "its command line names (-e, -Y, -R)")
vfu.prefs.colour_errors = Pref.bool("Colour frames with error findings", true,
  "GUI: temporary colouring rule 1 (pink) selects vfio_user.finding.severity == 2")

-- ======================================================================
-- Which tree to build.  tshark keeps the kind of tree (none, or one) and of columns for a whole pass, and
-- a `-T fields` run needs only the fields it prints or filters on: in tshark these are learnt once per pass.
-- ======================================================================
local RISKY_OPTS = "VOPxSjJGzwU"  -- tshark options that print or use the whole tree
local ARG_OPTS = "aAbBcCdeEfFGHijJKMNoOrRsStTuUwWXyYz"  -- tshark options that take a value

-- this process's command line ({} when it cannot be read)
local function command_line()
  local fh = io.open("/proc/self/cmdline", "rb")
  if fh == nil then return {} end
  local raw = fh:read("*a") or ""
  fh:close()
  local args = {}
  for a in string.gmatch(raw, "([^%z]*)%z") do args[#args + 1] = a end
  return args
end

-- the vfio_user/vfucap fields a `tshark -T fields` run names (-e, -Y, -R), or nil: the whole tree (another
-- output, an option that prints or taps the tree, a column, a macro, a name that is not a field)
local function asked_fields(args)
  local values, fields_mode = {}, false
  local i = 2
  while i <= #args do
    local a = args[i]
    if sub(a, 1, 2) == "--" then return nil end
    if sub(a, 1, 1) == "-" and #a > 1 then
      for k = 2, #a do  -- a cluster of one-letter options, the last one may take a value
        local o = sub(a, k, k)
        if find(RISKY_OPTS, o, 1, true) then return nil end
        if find(ARG_OPTS, o, 1, true) then
          local v = sub(a, k + 1)
          if v == "" then
            i = i + 1
            v = args[i] or ""
          end
          if o == "T" then
            if v ~= "fields" then return nil end
            fields_mode = true
          elseif o == "e" and sub(v, 1, 7) == "_ws.col" then
            return nil
          elseif o == "e" or o == "Y" or o == "R" then  -- the fields printed, the filters
            values[#values + 1] = v
          end
          break
        end
      end
    end
    i = i + 1
  end
  if not fields_mode then return nil end
  local need = {}
  for _, v in ipairs(values) do
    if find(v, "${", 1, true) then return nil end
    for tok in string.gmatch(v, "[%w_%.%-]+") do
      if tok == "vfio_user" or tok == "vfucap" then return nil end
      if sub(tok, 1, 10) == "vfio_user." or sub(tok, 1, 7) == "vfucap." then
        local pf = BY_ABBR[tok]
        if pf == nil then return nil end
        if pf then need[pf] = true end
      end
    end
  end
  return need
end

local ARGS = command_line()
local IS_TSHARK = ARGS[1] ~= nil and find(ARGS[1], "tshark[^/]*$") ~= nil
local ASKED = IS_TSHARK and asked_fields(ARGS) or nil
-- what this load decided, for whoever looks (the tests): the fields a fields-only run builds
local LOADED = {version = SPEC.version, tshark = IS_TSHARK, asked = {}}
for abbr, pf in pairs(BY_ABBR) do
  if pf and ASKED and ASKED[pf] then LOADED.asked[#LOADED.asked + 1] = abbr end
end
table.sort(LOADED.asked)
package.loaded.vfudissect_vfio_user = LOADED

-- the message header's fields: {field, which value (1 msg_id, 2 command, 3 size, 4 flags, 5 error), only when
-- ("reserved" bits set, "error" set or on a reply)}
local HEADER_FIELDS = {{VF.msg_id, 1}, {VF.command, 2}, {VF.size, 3}, {VF.flags, 4}, {VF.flags_type, 4},
  {VF.flags_no_reply, 4}, {VF.flags_error, 4}, {VF.flags_reserved, 4, "reserved"}, {VF.error, 5, "error"}}

-- parts of the tree: a fields-only run skips the parts it needs no field of
local function groups(need)
  local part = {}  -- field -> the part it belongs to (the rest: the payload tails)
  local function part_of(name, list)
    local any = false
    for _, pf in ipairs(list) do
      part[pf] = name
      any = any or need[pf] == true
    end
    return any
  end
  local g = {lay = {}, tail = false, hdr_list = {}}  -- hdr_list: the header fields asked for
  for _, h in ipairs(HEADER_FIELDS) do
    part[h[1]] = "hdr"
    if need[h[1]] then g.hdr_list[#g.hdr_list + 1] = h end
  end
  g.hdr = #g.hdr_list > 0
  g.links = part_of("links", {VF.request_in, VF.response_in, VF.time})
  g.fnd = part_of("fnd", {VF.finding, VF.finding_severity, VF.finding_text, VF.finding_frame, VF.finding_conn,
    VF.finding_record})
  g.rec = part_of("rec", rf_list)
  for key, entries in pairs(LAYOUT_F) do
    local list = {LAYOUT_T[key]}
    if key == "device_feature" then list[#list + 1] = VF.feature end
    for _, e in ipairs(entries) do
      list[#list + 1] = e.pf
      for _, b in ipairs(e.bits or {}) do list[#list + 1] = b end
    end
    g.lay[key] = part_of("lay", list)
  end
  for pf in pairs(need) do
    if part[pf] == nil then g.tail = true end
  end
  return g
end

local G_ALL = {hdr = true, links = true, fnd = true, rec = true, tail = true, lay = {}}
for key in pairs(LAYOUT_F) do G_ALL.lay[key] = true end
local G_ASKED = ASKED and groups(ASKED)

local ALL, NEED, G = true, {}, G_ALL  -- the whole tree, or only the fields in NEED (parts G)
local LINKS = true                    -- requests and replies are paired (not in a run that shows no link)
local QUIET = false                   -- no tree, no columns, no links: a whole message needs nothing done
local WANT_TREE, WANT_COLS = true, true
local PASS = {last = 0, visited = nil}

local function tree_mode(pinfo, tree, f)
  local visited = pinfo.visited
  if IS_TSHARK and f > PASS.last and visited == PASS.visited then
    PASS.last = f
    return
  end
  PASS.last, PASS.visited = f, visited
  WANT_TREE = tree.text ~= nil  -- a NULL tree (first pass of -2, summary-only runs) has no item
  WANT_COLS = tostring(pinfo.cols.info) ~= "(info)"  -- "(info)" when no columns are being filled
  ALL = not (IS_TSHARK and ASKED and vfu.prefs.fields_only)
  NEED, G = ALL and {} or ASKED, ALL and G_ALL or G_ASKED
  LINKS = ALL or G.links
  QUIET = not WANT_TREE and not WANT_COLS and not LINKS
end

-- the one door to the tree: in a fields-only run a field not asked for is not built (nil); ranges are made
-- only for the items built.  String fields get their value (safe()), never bytes for Wireshark to decode.
local TVB
local function put(parent, pf, off, len, value)
  if ALL or NEED[pf] then
    if value == nil then return parent:add_le(pf, TVB(off, len)) end
    return parent:add_le(pf, TVB(off, len), value)
  end
end

local function put_value(parent, pf, value)
  if ALL or NEED[pf] then return parent:add(pf, value) end
end

local function put_generated(parent, pf, value)
  if ALL or NEED[pf] then
    local it = parent:add(pf, value)
    it:set_generated()
    return it
  end
end

-- a field and the flag bits below it, on one range
local function put_bits(parent, pf, bits, off, len)
  local r
  local it = parent
  if ALL or NEED[pf] then
    r = TVB(off, len)
    it = parent:add_le(pf, r)
  end
  for _, b in ipairs(bits) do
    if ALL or NEED[b] then
      r = r or TVB(off, len)
      it:add_le(b, r)
    end
  end
  return it
end

-- ======================================================================
-- Links per frame, kept out of the collector's way.  Lua's collector walks every live table on each cycle,
-- and a tree brings a cycle every few hundred frames: a table entry per frame would make the cost of a frame
-- grow with the capture.  The two newest chunks of CHUNK frames are tables; older ones are sealed into one
-- ByteArray each, of fixed SLOT-character slots (hex: peer, command, flags, |response time| in ns); the
-- response frame of a command in a sealed chunk goes to a small patch table.
-- ======================================================================
local CHUNK, SLOT = 4096, 26
local L_RTT, L_CTX, L_NEG = 1, 2, 4  -- slot flags: a reply with a response time, a CONTEXT copy, negative time
local NS_MAX = 2 ^ 48

local function links_new()
  return {open = {}, sealed = {}, patch = {}, big = {}, top = -1}
end

-- seal a chunk: one string.format per two slots (hex digits: peer 8, command 4, flags 2, ns 12), long enough
-- not to be interned
local SLOT_FMT = "%08x%04x%02x%012x"
local PAIR_FMT = SLOT_FMT .. SLOT_FMT
local function links_seal(lk, k)
  local c = lk.open[k]
  lk.open[k] = nil
  local peer, cmds, flags, nss = c.peer, c.cmd, c.flags, c.ns
  local parts = {}
  for i = 0, CHUNK - 1, 2 do
    parts[#parts + 1] = fmt(PAIR_FMT, peer[i] or 0, cmds[i] or 0, flags[i] or 0, nss[i] or 0, peer[i + 1] or 0,
      cmds[i + 1] or 0, flags[i + 1] or 0, nss[i + 1] or 0)
  end
  lk.sealed[k] = ByteArray.new(concat(parts), true)  -- outside Lua's heap: a string there still slows each cycle
end

local function links_chunk(lk, f)
  local i = f % CHUNK
  local k = (f - i) / CHUNK
  if k > lk.top then
    for old in pairs(lk.open) do
      if old < k - 1 then links_seal(lk, old) end
    end
    lk.top = k
  end
  local c = lk.open[k]
  if c == nil and lk.sealed[k] == nil then
    c = {peer = {}, cmd = {}, flags = {}, ns = {}}
    lk.open[k] = c
  end
  return c, i
end

-- a reply's link (first pass, frames in order): its request, that request's command, response time
local function links_reply(lk, f, req, cmd, rtt, ctx)
  local c, i = links_chunk(lk, f)
  local fl = L_RTT + (ctx and L_CTX or 0) + (rtt < 0 and L_NEG or 0)
  local ns = (rtt < 0 and -rtt or rtt) * 1e9 + 0.5
  ns = ns - ns % 1
  if ns >= NS_MAX then
    lk.big[f] = rtt
    ns = 0
  end
  c.peer[i], c.cmd[i], c.flags[i], c.ns[i] = req, cmd, fl, ns
end

-- a command's response frame (a command has at most one reply: it waits no more once answered)
local function links_response(lk, f, resp)
  local i = f % CHUNK
  local c = lk.open[(f - i) / CHUNK]
  if c ~= nil then c.peer[i] = resp else lk.patch[f] = resp end
end

-- peer frame (request of a reply, response of a command), request's command, response time (s), CONTEXT copy
local function links_get(lk, f)
  local i = f % CHUNK
  local k = (f - i) / CHUNK
  local c = lk.open[k]
  local peer, cmd, fl, ns
  if c ~= nil then
    peer, cmd, fl, ns = c.peer[i], c.cmd[i], c.flags[i] or 0, c.ns[i]
  else
    local sealed = lk.sealed[k]
    if sealed == nil then return lk.patch[f] end
    local slot = sealed:raw(i * SLOT, SLOT)
    peer = tonumber(sub(slot, 1, 8), 16)
    if peer == 0 then return lk.patch[f] end
    cmd, fl, ns = tonumber(sub(slot, 9, 12), 16), tonumber(sub(slot, 13, 14), 16), tonumber(sub(slot, 15, 26), 16)
  end
  if peer == nil or band(fl, L_RTT) == 0 then return peer end
  local rtt = lk.big[f] or ns / 1e9 * (band(fl, L_NEG) ~= 0 and -1 or 1)
  return peer, cmd, rtt, band(fl, L_CTX) ~= 0
end

-- ======================================================================
-- Per-file state: built on the first pass, read on later ones
-- ======================================================================
local S

local function reset()
  S = {
    links = links_new(),  -- frame -> request (replies: with command, response time) or response (commands)
    pend = {},      -- (conn, requester direction, msg_id) -> commands waiting, oldest first
    closed = {},    -- conn -> {[dir] = true}
    partial = {},   -- fragments being reassembled
    reasm = {},     -- completing frame -> {data, len, frames, flags, fds, msg_len, note}
    frag_in = {},   -- fragment frame -> frame that completes the message
    corrupt = {},   -- frame -> why its record cannot be decoded (fragment order)
    findings = {},  -- FINDING records: {code, sev, text, frames, conn, record}
    by_frame = {},  -- frame -> the findings that name it
  }
  PASS.last, PASS.visited = 0, nil
end
reset()

local COLOURED = false
local ERROR_FILTER = "vfio_user.finding.severity == 2"

function vfucap.init()
  reset()
  if not COLOURED and gui_enabled() and vfu.prefs.colour_errors then
    COLOURED = pcall(set_color_filter_slot, 1, ERROR_FILTER)
  end
end

-- ======================================================================
-- Request/response links: display-level conversation tracking, as the engine pairs (core/state.py): a
-- reply answers the oldest command waiting with its (connection, requester direction, msg_id) that expects
-- one, else the oldest no_reply command; once both directions of a connection closed, only no_reply commands
-- wait (the engine's "outstanding" commands are those of the queues that expect a reply).
-- ======================================================================
local function pend_key(conn, d, msg_id)
  return conn * 131072 + d * 65536 + msg_id
end

-- a command goes out: {frame, time, command, no_reply} joins the commands waiting with its key
local function track(conn, d, msg_id, frame, ts, cmd, no_reply)
  local key = pend_key(conn, d, msg_id)
  local p = {frame, ts, cmd, no_reply}
  local q = S.pend[key]
  if q == nil then
    S.pend[key] = {p}
  else
    q[#q + 1] = p
    if no_reply and #q > NO_REPLY_KEPT then tremove(q, 1) end
  end
end

-- a reply comes in: the command it answers, or nil
local function match(conn, d, msg_id)
  local key = pend_key(conn, OTHER[d], msg_id)
  local q = S.pend[key]
  if q == nil then return nil end
  local p
  for i = 1, #q do
    if not q[i][4] then
      p = tremove(q, i)
      break
    end
  end
  p = p or tremove(q, 1)
  if #q == 0 then S.pend[key] = nil end
  return p
end

-- once both directions closed, the commands still expecting a reply wait no more
local function closed(conn, d)
  local c = S.closed[conn]
  if c == nil then
    c = {}
    S.closed[conn] = c
  end
  if d == nil then c[C2S], c[S2C] = true, true else c[d] = true end
  if not (c[C2S] and c[S2C]) then return end
  for key, q in pairs(S.pend) do
    if floor(key / 131072) == conn then
      for i = #q, 1, -1 do
        if not q[i][4] then tremove(q, i) end
      end
      if #q == 0 then S.pend[key] = nil end
    end
  end
end

-- a message of the first pass (its header fields; vflags the record's flags, ts its time)
local function link(frame, ts, conn, d, msg_id, cmd, flags, vflags)
  local mtype = flags % TYPE_MOD
  if mtype == 0 then
    track(conn, d, msg_id, frame, ts, cmd, has(flags, C.FLAG_NO_REPLY))
  elseif mtype == 1 and not has(vflags, C.VF_FRAMING_ERROR) then
    local req = match(conn, d, msg_id)
    if req ~= nil then
      links_reply(S.links, frame, req[1], req[3], ts - req[2], has(vflags, C.VF_CONTEXT))
      links_response(S.links, req[1], frame)
    end
  end
end

-- ======================================================================
-- JSON for the VERSION tree, read as Python's json reads it: values with their byte positions (p..e, keys at
-- kp); nil when malformed (then the data shows as text)
-- ======================================================================
local JSON_MAX_DEPTH = 980  -- about where Python's json gives up
local json_value

local function skip_ws(s, i)
  local b = byte(s, i)
  while b == 32 or b == 9 or b == 10 or b == 13 do
    i = i + 1
    b = byte(s, i)
  end
  return i
end

local ESCAPES = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r",
  [116] = "\t"}

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then return string.char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64) end
  return string.char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64,
    0x80 + cp % 64)
end

local function json_string(s, i)
  local out, j = {}, i + 1
  while true do
    local k = find(s, '["\\%c]', j)
    if k == nil then return nil end
    out[#out + 1] = sub(s, j, k - 1)
    local b = byte(s, k)
    if b == 34 then return concat(out), k + 1 end
    if b ~= 92 then return nil end
    local e = byte(s, k + 1)
    if e == 117 then
      local cp = tonumber(sub(s, k + 2, k + 5), 16)
      if cp == nil or #sub(s, k + 2, k + 5) ~= 4 then return nil end
      j = k + 6
      if cp >= 0xD800 and cp <= 0xDBFF and sub(s, j, j + 1) == "\\u" then
        local c2 = tonumber(sub(s, j + 2, j + 5), 16)
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
      j = k + 2
    end
  end
end

-- -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)?
local function json_number(s, i)
  local j = i
  if byte(s, j) == 45 then j = j + 1 end
  local int = string.match(s, "^0", j) or string.match(s, "^[1-9]%d*", j)
  if int == nil then return nil end
  j = j + #int
  local frac = string.match(s, "^%.%d+", j) or ""
  j = j + #frac
  local exp = string.match(s, "^[eE][-+]?%d+", j) or ""
  j = j + #exp
  local lit = sub(s, i, j - 1)
  return {t = (frac == "" and exp == "") and "int" or "float", lit = lit, v = tonumber(lit), p = i, e = j - 1}, j
end

local function json_container(s, i, depth, close)
  local node = close == 125 and {t = "obj", keys = {}, map = {}, p = i} or {t = "arr", items = {}, p = i}
  local j = skip_ws(s, i + 1)
  if byte(s, j) == close then
    node.e = j
    return node, j + 1
  end
  while true do
    local kp, k = j, nil
    if close == 125 then
      if byte(s, j) ~= 34 then return nil end
      k, j = json_string(s, j)
      if k == nil then return nil end
      j = skip_ws(s, j)
      if byte(s, j) ~= 58 then return nil end
      j = skip_ws(s, j + 1)
    end
    local v, j2 = json_value(s, j, depth + 1)
    if v == nil then return nil end
    if close == 125 then
      v.kp = kp
      if node.map[k] == nil then node.keys[#node.keys + 1] = k end
      node.map[k] = v
    else
      node.items[#node.items + 1] = v
    end
    j = skip_ws(s, j2)
    local c = byte(s, j)
    if c == close then
      node.e = j
      return node, j + 1
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
  elseif b == 123 or b == 91 then
    return json_container(s, i, depth, b + 2)
  elseif sub(s, i, i + 3) == "null" then return {t = "null", p = i, e = i + 3}, i + 4
  elseif sub(s, i, i + 3) == "true" then return {t = "bool", v = true, p = i, e = i + 3}, i + 4
  elseif sub(s, i, i + 4) == "false" then return {t = "bool", v = false, p = i, e = i + 4}, i + 5
  elseif b == 45 or (b ~= nil and b >= 48 and b <= 57) then
    local num, j = json_number(s, i)
    if num ~= nil then return num, j end
  end
  for _, word in ipairs({"NaN", "Infinity", "-Infinity"}) do  -- Python reads these too
    if sub(s, i, i + #word - 1) == word then return {t = "float", lit = word, p = i, e = i + #word - 1}, i + #word end
  end
  return nil
end

local function json_decode(s)
  if utf8_repair(s) ~= s then return nil end  -- not UTF-8: not JSON
  local ok, v, j = pcall(json_value, s, skip_ws(s, 1), 0)
  if not ok or v == nil or skip_ws(s, j) ~= #s + 1 then return nil end
  return v
end

-- compact JSON text of a parsed value (Info column, labels)
local function json_text(v, limit)
  local out, n = {}, 0
  local function put_s(x)
    out[#out + 1] = x
    n = n + #x
  end
  local function quote(x)
    return (fmt("%q", x):gsub("\\\n", "\\n"))
  end
  local function walk(x)
    if limit and n > limit then return end
    local t = x.t
    if t == "obj" then
      put_s("{")
      for i, k in ipairs(x.keys) do
        if i > 1 then put_s(",") end
        put_s(quote(k) .. ":")
        walk(x.map[k])
      end
      put_s("}")
    elseif t == "arr" then
      put_s("[")
      for i, item in ipairs(x.items) do
        if i > 1 then put_s(",") end
        walk(item)
      end
      put_s("]")
    elseif t == "str" then put_s(quote(x.v))
    elseif t == "bool" then put_s(x.v and "true" or "false")
    elseif t == "null" then put_s("null")
    else put_s(x.lit) end
  end
  walk(v)
  local s = concat(out)
  if limit and #s > limit then s = sub(s, 1, limit) .. "…" end
  return s
end

-- the VERSION data after major/minor: the JSON document (or nil) and its text up to the first NUL
local function version_doc(raw)
  local body = raw
  local nul = find(body, "\0", 1, true)
  if nul then body = sub(body, 1, nul - 1) end
  return json_decode(body), body
end

-- ======================================================================
-- Payload layouts: one decoder and one Info formatter per layout, compiled once from spec.LAYOUTS
-- ======================================================================
local DECODE, KEYS = {}, {}  -- (s, b): a table of the fields; their Info text (read straight from s)
do
  local readers = {[1] = "byte", [2] = "rd16", [4] = "rd32", [8] = "rd64"}
  local env = {byte = byte, rd16 = rd16, rd32 = rd32, rd64 = rd64, hex = hex, dec = dec, fmt = fmt, band = band,
    bnot = bnot, bits_text = bits_text, E = E, FEATURES = E.FEATURES, FEATURE_MASK = C.FEATURE_MASK}
  for _, key in ipairs(SPEC.layout_order) do
    local reads, names, form, args = {}, {}, {}, {}  -- the fields' reads; the Info text's format and arguments
    for i, fd in ipairs(LAYOUTS[key].fields) do
      reads[i] = fmt("%s(s, b + %d)", readers[fd.size], 17 + fd.offset)
      names[i] = fmt("[%q] = v%d", fd.name, i)
      local v = "v" .. i
      if key == "device_feature" and fd.name == "flags" then
        form[#form + 1] = "feature=%s"
        args[#args + 1] = fmt('FEATURES[band(%s, FEATURE_MASK)] or fmt("%%d", band(%s, FEATURE_MASK))', v, v)
        v = fmt("band(%s, bnot(FEATURE_MASK))", v)
      end
      local spec_, arg = "%s", nil
      if fd.size == 8 then arg = (fd.hex and "hex(%s)" or "dec(%s)"):format(v)
      elseif fd.bits then arg = fmt("bits_text(%s, E[%q])", v, fd.bits)
      elseif fd.values then arg = fmt('E[%q][%s] or fmt(%q, %s)', fd.values, v, fd.hex and "0x%x" or "%d", v)
      else spec_, arg = fd.hex and "0x%x" or "%d", v end
      if fd.name ~= "argsz" then
        form[#form + 1] = fd.name .. "=" .. spec_
        args[#args + 1] = arg
      end
    end
    local locals = {}
    for i = 1, #reads do locals[i] = "v" .. i end
    local head = "local s, b = ...\nlocal " .. concat(locals, ", ") .. " = " .. concat(reads, ", ") .. "\n"
    DECODE[key] = assert(load(head .. "return {" .. concat(names, ", ") .. "}", "=decode_" .. key, "t", env))
    local body = #form == 0 and '""' or fmt("fmt(%q, %s)", " " .. concat(form, " "), concat(args, ", "))
    KEYS[key] = assert(load(head .. "return " .. body, "=keys_" .. key, "t", env))
  end
end

local function human_size(n)
  local units = {"B", "KiB", "MiB", "GiB", "TiB"}
  for i, unit in ipairs(units) do
    if n < 1024 or unit == "TiB" then
      if i == 1 then return fmt("%d%s", n, unit) end
      return fmt("%.4g%s", n, unit)
    end
    n = n / 1024
  end
end

-- ======================================================================
-- Display: the vfio_user tree and the Info text of one message
-- ======================================================================
local function add_struct(tree, key, s, base, off)  -- tree nil: the values only
  local st = SPEC.structs[key]
  local sub_tree = tree and put(tree, STRUCT_T[key], base + off, st.size) or tree
  local vals = {}
  for _, e in ipairs(STRUCT_F[key]) do
    local fd = e.spec
    local at = off + fd.offset
    if tree then put(sub_tree, e.pf, base + at, fd.size) end
    if not fd.bytes then
      if fd.size == 2 then vals[fd.name] = rd16(s, base + at + 1)
      elseif fd.size == 4 then vals[fd.name] = rd32(s, base + at + 1)
      else vals[fd.name] = rd64(s, base + at + 1) end
    end
  end
  return sub_tree, vals, sub_tree ~= tree
end

local function label(item, own, text)
  if own then item:set_text(text) end
end

local function add_data(tree, base, off, len, pf)
  if len > 0 and vfu.prefs.show_payload then put(tree, pf or VF.data, base + off, len) end
end

-- VERSION data: the JSON text and the capabilities as a tree of keys and values (typed by the schema)
local function add_json_member(tree, base, path, v)
  local p0 = v.kp or v.p
  local schema = CAPS[path]
  local item
  local typed = schema ~= nil and ((schema.kind == "int" and v.t == "int" and math.abs(v.v) < TWO53)
    or (schema.kind == "bool" and v.t == "bool") or (schema.kind == "object" and v.t == "obj"))
  if typed then
    local value
    if schema.kind == "int" then value = Int64.new(v.v) elseif schema.kind == "bool" then value = v.v end
    item = put(tree, CAP_F[path], base + p0 - 1, v.e - p0 + 1, value)
  else
    item = put(tree, VF.caps_member, base + p0 - 1, v.e - p0 + 1, safe(path))
    if item then item:set_text(v.t == "obj" and safe(path) or safe(path .. ": " .. json_text(v, 80))) end
  end
  if v.t == "obj" then
    for _, k in ipairs(v.keys) do add_json_member(item or tree, base, path .. "." .. k, v.map[k]) end
  end
end

local function add_version_tail(tree, base, s, n)
  if n <= 20 then return nil end
  local doc, body = version_doc(sub(s, base + 21, base + n))
  if tree ~= nil then put(tree, VF.version_data, base + 20, n - 20, safe(body)) end
  if tree ~= nil and doc ~= nil and doc.t == "obj" then
    local at = base + 20
    local ct = put(tree, VF.caps, at + doc.p - 1, doc.e - doc.p + 1)
    if ct then ct:set_text("Version data") end
    for _, k in ipairs(doc.keys) do
      local v = doc.map[k]
      if k == "capabilities" and v.t == "obj" then
        local capt = put(ct or tree, VF.caps, at + v.kp - 1, v.e - v.kp + 1)
        if capt then capt:set_text("Capabilities") end
        for _, ck in ipairs(v.keys) do add_json_member(capt or ct or tree, at, ck, v.map[ck]) end
      else
        local it = put(ct or tree, VF.caps_member, at + v.kp - 1, v.e - v.kp + 1, safe(k))
        if it then it:set_text(safe(k .. ": " .. json_text(v, 80))) end
      end
    end
  end
  local caps = doc ~= nil and doc.t == "obj" and doc.map.capabilities or nil
  if caps ~= nil and caps.t ~= "obj" then caps = nil end
  if doc == nil and body ~= "" then return nil, body end
  return caps
end

local function add_caps_chain(tree, base, s, n, first)
  local off, prev, seen = first, 0, 0
  while off ~= 0 and off > prev and seen < 64 do
    local at = 16 + off
    if at + 8 > n then break end
    seen = seen + 1
    local ct, hdr, own = add_struct(tree, "region_cap", s, base, at)
    label(ct, own, fmt("Capability %s at %d", E.REGION_CAP_IDS[hdr.id] or fmt("%d", hdr.id), off))
    if hdr.id == C.REGION_CAP_SPARSE_MMAP and at + 16 <= n then
      local _, head = add_struct(ct, "sparse_mmap", s, base, at + 8)
      for i = 0, math.min(head.nr_areas, 4096) - 1 do
        local p = at + 16 + 16 * i
        if p + 16 > n then break end
        local area, _, own_a = add_struct(ct, "sparse_area", s, base, p)
        label(area, own_a, fmt("Area %d", i))
      end
    elseif hdr.id == C.REGION_CAP_TYPE and at + 16 <= n then
      add_struct(ct, "region_type", s, base, at + 8)
    end
    prev = off
    off = hdr.next
  end
end

-- payload tails that are a bitmap behind a header struct: tail -> {struct, request flag that brings it}
local BITMAP_TAILS = {bitmap = {"unmap_bitmap", 1}, dirty = {"dirty_bitmap", 4}}

local function add_tail(tree, base, s, n, lay, f)
  local off = 16 + lay.size
  local rest = n - off
  if rest <= 0 then return end
  local tail = lay.tail
  if tail == "data" then
    add_data(tree, base, off, rest)
  elseif tail == "caps" then
    if band(f.flags, C.REGION_FLAG_CAPS) ~= 0 and f.cap_offset >= 32 then
      add_caps_chain(tree, base, s, n, f.cap_offset)
    else
      add_data(tree, base, off, rest)
    end
  elseif tail == "io_fds" then
    local count = f.count
    local stride = count > 0 and (f.argsz - 16) / count or 0
    local key = stride == SPEC.structs.io_fd.size and "io_fd" or (stride == SPEC.structs.io_fd_lvu.size and
      "io_fd_lvu" or nil)
    if key == nil and count > 0 and rest >= count * SPEC.structs.io_fd_lvu.size then key = "io_fd_lvu" end
    if key == nil and count > 0 then key = "io_fd" end
    if key == nil then
      add_data(tree, base, off, rest)
      return
    end
    local size = SPEC.structs[key].size
    for i = 0, math.min(count, 1024) - 1 do
      local p = off + i * size
      if p + size > n then break end
      local e, _, own = add_struct(tree, key, s, base, p)
      label(e, own, fmt("I/O fd entry %d", i))
    end
  elseif tail == "irq_data" then
    add_data(tree, base, off, rest, VF.irq_bools)
  elseif tail == "multi" then
    local size = SPEC.structs.write_multi_entry.size
    local cnt = type(f.wr_cnt) == "number" and f.wr_cnt or 0
    for i = 0, math.min(cnt, 4096) - 1 do
      local p = off + i * size
      if p + size > n then break end
      local e, v, own = add_struct(tree, "write_multi_entry", s, base, p)
      label(e, own, fmt("Write %d: %s offset %s count %d", i, E.PCI_REGIONS[v.region] or fmt("%d", v.region),
        hex(v.offset), v.count))
    end
  elseif tail == "feature_data" then
    local feature = band(f.flags, C.FEATURE_MASK)
    if feature == C.FEATURE_MIGRATION and rest >= 8 then
      put_bits(tree, VF.migration_flags, VF_MIGFLAG_BITS, base + off, 8)
    elseif feature == C.FEATURE_MIG_DEVICE_STATE and rest >= SPEC.structs.mig_state.size then
      add_struct(tree, "mig_state", s, base, off)
    elseif (feature == C.FEATURE_DMA_LOGGING_START or feature == C.FEATURE_DMA_LOGGING_STOP)
        and rest >= SPEC.structs.dma_logging.size then
      local _, head = add_struct(tree, "dma_logging", s, base, off)
      local size = SPEC.structs.dma_logging_range.size
      for i = 0, math.min(head.num_ranges, 4096) - 1 do
        local p = off + SPEC.structs.dma_logging.size + i * size
        if p + size > n then break end
        local e, _, own = add_struct(tree, "dma_logging_range", s, base, p)
        label(e, own, fmt("Range %d", i))
      end
    elseif feature == C.FEATURE_DMA_LOGGING_REPORT and rest >= SPEC.structs.dma_logging_report.size then
      add_struct(tree, "dma_logging_report", s, base, off)
      local boff = off + SPEC.structs.dma_logging_report.size
      if n > boff then add_data(tree, base, boff, n - boff, VF.bitmap) end
    else
      add_data(tree, base, off, rest)
    end
  elseif BITMAP_TAILS[tail] ~= nil then  -- a bitmap header struct when the flag says so, then the bitmap
    local struct, flag = BITMAP_TAILS[tail][1], BITMAP_TAILS[tail][2]
    if band(f.flags, flag) ~= 0 and rest >= SPEC.structs[struct].size then
      add_struct(tree, struct, s, base, off)
      local boff = off + SPEC.structs[struct].size
      if n > boff then add_data(tree, base, boff, n - boff, VF.bitmap) end
    else
      add_data(tree, base, off, rest)
    end
  elseif tail ~= "json" then
    add_data(tree, base, off, rest)
  end
end

-- " ← request (response time)" in the Info column
local function request_text(rq, rtt)
  if rtt < 1e-3 then return fmt(" ← %d (%.0fµs)", rq, rtt * 1e6) end
  if rtt < 1 then return fmt(" ← %d (%.2fms)", rq, rtt * 1e3) end
  return fmt(" ← %d (%.3fs)", rq, rtt)
end

local function nstime(rtt)
  local t = rtt < 0 and -rtt or rtt  -- Wireshark keeps a negative time with both parts negative
  local secs = floor(t)
  local nsecs = floor((t - secs) * 1e9 + 0.5)
  if nsecs >= 1000000000 then secs, nsecs = secs + 1, nsecs - 1000000000 end
  if rtt < 0 then return NSTime.new(-secs, -nsecs) end
  return NSTime.new(secs, nsecs)
end

-- One message: its bytes are s[base + 1 .. base + n], at offset base of TVB too; frame nil: decode only; fds
-- {kind, size} list; vflags the record's flags.  tree: nil for none.  cols: nil, or the connection the Info text
-- starts with (its direction d; none: a bare message).  Returns the message's item (or nil) and, with cols, its
-- Info text.
local function display_message(s, base, n, tree, frame, fds, vflags, visited, cols, d)
  local root
  if tree ~= nil then
    root = tree
    if ALL then root = tree:add(vfu, TVB(base, n)) end
  end
  if n < 16 then
    if root and ALL then root:append_text(fmt(", %d bytes: shorter than the header", n)) end
    return root, cols and fmt("%s[%d bytes, shorter than the 16-byte header]", d and fmt("#%d %s ", cols, ARROW[d])
      or "", n)
  end
  local h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11, h12, h13, h14, h15, h16 = byte(s, base + 1, base + 16)
  local msg_id, cmd = h1 + h2 * 256, h3 + h4 * 256
  local size, flags = h5 + h6 * 256 + h7 * 65536 + h8 * 16777216, h9 + h10 * 256 + h11 * 65536 + h12 * 16777216
  local err = h13 + h14 * 256 + h15 * 65536 + h16 * 16777216
  local mtype = flags % TYPE_MOD
  local is_reply = mtype == 1
  local is_error = is_reply and has(flags, C.FLAG_ERROR)
  local info = COMMANDS[cmd]
  local key
  if info ~= nil and not is_error then
    if is_reply then key = info.reply_layout else key = info.request_layout end
  end
  local lay = key and LAYOUTS[key]
  local kind, name
  if root and ALL or cols then
    name = info and info.name or fmt("CMD_%d", cmd)
    if mtype == 0 then
      kind = has(flags, C.FLAG_NO_REPLY) and "command (no_reply)" or "command"
    elseif is_reply then
      kind = is_error and "error reply" or "reply"
    else
      kind = fmt("type%d", mtype)
    end
  end
  if root and ALL then
    root:append_text(fmt(", %s %s id=%d", name, kind, msg_id))
    root:add_le(VF.msg_id, TVB(base, 2))
    root:add_le(VF.command, TVB(base + 2, 2))
    root:add_le(VF.size, TVB(base + 4, 4))
    local ft = put_bits(root, VF.flags, MSG_FLAG_BITS, base + 8, 4)
    if band(flags, C.FLAG_RESERVED_MASK) ~= 0 then ft:add_le(VF.flags_reserved, TVB(base + 8, 4)) end
    if err ~= 0 or is_reply then root:add_le(VF.error, TVB(base + 12, 4)) end
  elseif root and G.hdr then  -- a fields-only run: values without byte ranges (nobody sees the tree)
    for _, h in ipairs(G.hdr_list) do
      local when = h[3]
      if when == nil or (when == "error" and (err ~= 0 or is_reply))
          or (when == "reserved" and band(flags, C.FLAG_RESERVED_MASK) ~= 0) then
        local w = h[2]
        root:add(h[1], w == 1 and msg_id or w == 2 and cmd or w == 3 and size or w == 4 and flags or err)
      end
    end
  end
  local f, caps, vdata
  local decoded = lay ~= nil and n - 16 >= lay.size
  if n > 16 and (cols or root and (G.tail or G.lay[key])) then
    if decoded then
      if root or lay.tail ~= "json" then f = DECODE[key](s, base) end
      local pt
      if root then
        pt = put(root, LAYOUT_T[key], base + 16, n - 16) or root
        if G.lay[key] then
          for _, e in ipairs(LAYOUT_F[key]) do
            local at = base + e.at
            if e.bits then put_bits(pt, e.pf, e.bits, at, e.spec.size) else put(pt, e.pf, at, e.spec.size) end
            if cmd == 16 and e.spec.name == "flags" then put(pt, VF.feature, at, 4) end
          end
        end
      end
      if lay.tail == "json" then
        caps, vdata = add_version_tail(root and G.tail and pt or nil, base, s, n)
      elseif root and G.tail then
        add_tail(pt, base, s, n, lay, f)
      end
    elseif root and G.tail then
      local pt = put(root, VF.payload, base + 16, n - 16)
      if pt and lay ~= nil then pt:append_text(fmt(" (%d bytes, %s needs %d)", n - 16, lay.title, lay.size)) end
    end
  end
  local rq, rs, rtt
  if frame ~= nil then
    local peer, _, t = links_get(S.links, frame)
    if peer ~= nil then
      if is_reply then
        rq, rtt = peer, t
      elseif visited then
        rs = peer
      end
    end
  end
  if root and G.links then
    if rq ~= nil then
      put_generated(root, VF.request_in, rq)
      put_generated(root, VF.time, nstime(rtt))
    end
    if rs ~= nil then put_generated(root, VF.response_in, rs) end
  end
  if not cols then return root end
  local err_text, fds_text, keys_text, flag_text, link_text = "", "", "", "", ""
  if is_error then err_text = fmt(" %s(%d)", E.ERRNO_NAMES[err] or fmt("errno %d", err), err) end
  if #fds > 0 then
    local fl = {}
    for i, fd in ipairs(fds) do
      fl[i] = (E.FD_KINDS[fd.kind] or "unknown") .. (fd.size == 0 and "" or
        (" " .. (type(fd.size) == "number" and human_size(fd.size) or hex(fd.size))))
    end
    fds_text = " fds=[" .. concat(fl, ", ") .. "]"
  end
  if decoded then
    keys_text = KEYS[key](s, base)
    if caps then keys_text = keys_text .. " caps=" .. safe(json_text(caps, 200)) end
    if vdata then keys_text = keys_text .. " version_data=" .. safe(fmt("%q", sub(vdata, 1, 40))) end
  end
  if vflags ~= 0 then
    if has(vflags, C.VF_TRUNCATED) then flag_text = " [truncated]" end
    if has(vflags, C.VF_CONTEXT) then flag_text = flag_text .. " [context]" end
  end
  if rq ~= nil then link_text = request_text(rq, rtt) elseif rs ~= nil then link_text = fmt(" → %d", rs) end
  local text
  if d then
    text = fmt("#%d %s %s %s id=%d %dB%s%s%s%s%s", cols, ARROW[d], name, kind, msg_id, size, err_text, fds_text,
      keys_text, flag_text, link_text)
  else
    text = fmt("%s %s id=%d %dB%s%s%s%s%s", name, kind, msg_id, size, err_text, fds_text, keys_text, flag_text,
      link_text)
  end
  return root, text
end

-- ======================================================================
-- Findings: the FINDING records' verdicts, and the same expert items on the frames they name
-- ======================================================================
local function finding_expert(item, fnd)
  local ex = EXPERT[fnd.code]
  if ex ~= nil and SEVERITY_OF[fnd.code] == fnd.sev then
    item:add_proto_expert_info(ex, expert_text(fnd.text))
  else
    item:add_proto_expert_info(EX_OTHER[fnd.sev], expert_text(fnd.text))
  end
end

local function frames_text(frames)
  if #frames == 0 then return "" end
  return fmt(" [frame%s %s]", #frames > 1 and "s" or "", concat(frames, ", "))
end

-- every finding that names this frame (known after the first pass): its code, a link to its record, expert
local function findings_on(frame, item, want_tree)
  local list = S.by_frame[frame]
  if list == nil then return end
  for _, fnd in ipairs(list) do
    if want_tree then
      local it = put_value(item, VF.finding, fnd.code)
      if it then it:set_text(fnd.code .. ": " .. fnd.text) it:set_generated() end
      put_generated(it or item, VF.finding_severity, fnd.rank)
      put_generated(it or item, VF.finding_record, fnd.record)
    end
    finding_expert(item, fnd)
  end
end

-- ======================================================================
-- The capture record (vfucap): header and TLVs as capture/vfuc.py decodes them, messages as the reader
-- yields them (capture/reader.py: its fast path, fragments, corrupt records)
-- ======================================================================
local VF_MORE = C.VF_MORE_FRAGMENTS
local NO_FDS, NO_TLVS = {}, {}

-- the VFUC header; r.err says why a record cannot be decoded.  A whole message behind the writer's direction
-- prefix (the reader's fast path, nearly every record) fills one table kept for it: nothing is allocated.
local M1, M2, M3, M4 = byte(C.VFUC_MAGIC, 1, 4)
local FAST = {fast = true, fds = NO_FDS, tlvs = NO_TLVS, err = false, version = C.VFUC_VERSION, rt = REC.MSG,
  hdr_len = C.VFUC_FIXED_SIZE, n_fds = 0, frag_off = 0, payload_off = C.VFUC_FIXED_SIZE, magic = C.VFUC_MAGIC}

local function parse_record(s, n, p2p)
  if n < C.VFUC_FIXED_SIZE then
    return {n = n, err = fmt("record too short for a VFUC header (%d bytes)", n), fds = NO_FDS, tlvs = NO_TLVS,
      payload_off = 0}
  end
  local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16, b17, b18, b19, b20, b21, b22, b23, b24,
    b25, b26, b27, b28, b29, b30, b31, b32 = byte(s, 1, 32)
  if (p2p == 0 or p2p == 1) and b6 == REC.MSG and b7 + b8 * 256 == C.VFUC_FIXED_SIZE and b15 == 0 and b16 == 0
      and b21 + b22 + b23 + b24 == 0 and not has(b14, VF_MORE) and b1 == M1 and b2 == M2 and b3 == M3 and b4 == M4 then
    local r = FAST
    r.n, r.conn, r.d, r.flags, r.dir = n, b9 + b10 * 256 + b11 * 65536 + b12 * 16777216, b13, b14, p2p
    r.msg_len, r.msg_seq = b17 + b18 * 256 + b19 * 65536 + b20 * 16777216, b25 + b26 * 256 + b27 * 65536 + b28 * 16777216
    r.fd_ent_len, r.reserved, r.version = b29 + b30 * 256, b31 + b32 * 256, b5
    return r
  end
  local r = {n = n, magic = sub(s, 1, 4), version = b5, rt = b6, hdr_len = b7 + b8 * 256,
    conn = b9 + b10 * 256 + b11 * 65536 + b12 * 16777216, d = b13, flags = b14, n_fds = b15 + b16 * 256,
    msg_len = b17 + b18 * 256 + b19 * 65536 + b20 * 16777216, frag_off = b21 + b22 * 256 + b23 * 65536 + b24 * 16777216,
    msg_seq = b25 + b26 * 256 + b27 * 65536 + b28 * 16777216, fd_ent_len = b29 + b30 * 256, reserved = b31 + b32 * 256,
    fast = false, dir = false, payload_off = 0, fds = NO_FDS, tlvs = NO_TLVS, err = false}
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
  local fds, tlvs = {}, {}
  local off = C.VFUC_FIXED_SIZE
  for i = 1, r.n_fds do
    fds[i] = {off = off, kind = byte(s, off + 1), status = rd32(s, off + 5), size = rd64(s, off + 9),
      ino = rd64(s, off + 17)}
    off = off + r.fd_ent_len
  end
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
    if t.tag == TLV.FD_PATH and t.len >= 4 then
      local idx = rd16(t.value, 1)
      if fds[idx + 1] ~= nil then fds[idx + 1].path = sub(t.value, 5) end
    end
  end
  r.fds, r.tlvs, r.payload_off = fds, tlvs, r.hdr_len
  if r.d == 0 or r.d == 1 then r.dir = r.d end
  if (r.rt == REC.MSG or r.rt == REC.RAW or r.rt == REC.ORIGINAL) and r.dir == false then
    r.err = "message record without direction"
  elseif r.rt == REC.IRQ and n - r.hdr_len < SPEC.structs.irq_record.size then
    r.err = fmt("IRQ record of %d bytes", n - r.hdr_len)
  elseif r.rt == REC.FINDING then
    local code = nil
    for _, t in ipairs(tlvs) do
      if t.tag == TLV.FINDING_CODE and code == nil then code = t.value end
    end
    if code == nil or code == "" then r.err = "finding record without a code" end
  end
  return r
end

local function tlv(r, tag)
  for _, t in ipairs(r.tlvs) do
    if t.tag == tag then return t end
  end
  return nil
end

local function tlv_text(r, tag)
  local t = tlv(r, tag)
  return t and t.value or ""
end

-- the finding a FINDING record carries (as capture/vfuc.py finding_event reads it)
local function finding_of(r, frame)
  local sev = tlv(r, TLV.SEVERITY)
  local rank = sev and sev.len >= 1 and byte(sev.value, 1) or 0
  if rank >= #SPEC.severities then rank = 0 end
  local frames = {}
  local raw = tlv_text(r, TLV.FRAMES)
  for i = 1, #raw - 3, 4 do frames[#frames + 1] = rd32(raw, i) end
  local code = string.gsub(tlv(r, TLV.FINDING_CODE).value, "[\128-\255]", REPLACEMENT)  -- ascii, "replace"
  return {code = safe(code), sev = SPEC.severities[rank + 1], rank = rank, text = safe(tlv_text(r, TLV.NOTE)),
    frames = frames, conn = r.conn, record = frame}
end

-- the VFUC header in the tree; fields at their usual value (magic, version 1, hdr_len 32, no flags, no fds,
-- the message's own length, fd_ent_len, reserved) only when they say something
local function display_record(r, root)
  local n = r.n
  if n < C.VFUC_FIXED_SIZE then return end
  if r.magic ~= C.VFUC_MAGIC then put(root, RF.magic, 0, 4, safe(r.magic)) end
  if r.version ~= C.VFUC_VERSION then put(root, RF.version, 4, 1) end
  put(root, RF.rec_type, 5, 1)
  if r.hdr_len ~= C.VFUC_FIXED_SIZE then put(root, RF.hdr_len, 6, 2) end
  put(root, RF.conn, 8, 4)
  put(root, RF.dir, 12, 1)
  if r.flags ~= 0 then put_bits(root, RF.flags, RF_FLAG_BITS, 13, 1) end
  if r.n_fds ~= 0 then put(root, RF.num_fds, 14, 2) end
  local is_msg = r.rt == REC.MSG or r.rt == REC.RAW
  if (is_msg and r.msg_len ~= n - r.payload_off) or (not is_msg and r.msg_len ~= 0) then
    put(root, RF.msg_len, 16, 4)
  end
  if r.frag_off ~= 0 or band(r.flags, VF_MORE) ~= 0 then put(root, RF.frag_off, 20, 4) end
  if is_msg or r.msg_seq ~= 0 then put(root, RF.msg_seq, 24, 4) end
  if r.n_fds > 0 or r.fd_ent_len ~= C.VFUC_FD_ENTRY_SIZE then put(root, RF.fd_ent_len, 28, 2) end
  if r.reserved ~= 0 then put(root, RF.reserved, 30, 2) end
  for i, fd in ipairs(r.fds) do
    local len = math.min(r.fd_ent_len, n - fd.off)
    if len < C.VFUC_FD_ENTRY_SIZE then break end
    local t = put(root, RF.fd, fd.off, len)
    if t then
      t:set_text(safe(fmt("fd[%d]: %s, size %s, ino %s%s", i - 1, E.FD_KINDS[fd.kind] or "unknown", dec(fd.size),
        dec(fd.ino), fd.path and (", " .. fd.path) or "")))
    end
    t = t or root
    put(t, RF.fd_kind, fd.off, 1)
    put(t, RF.fd_reserved, fd.off + 1, 3)
    put(t, RF.fd_status_flags, fd.off + 4, 4)
    put(t, RF.fd_size, fd.off + 8, 8)
    put(t, RF.fd_ino, fd.off + 16, 8)
    if fd.path then put_generated(t, RF.fd_path, safe(fd.path)) end
  end
  for _, t in ipairs(r.tlvs) do
    local tt = put(root, RF.tlv, t.off, 4 + t.len)
    if tt then tt:set_text(fmt("TLV %s (%d bytes)", E.TLV_NAMES[t.tag] or fmt("%d", t.tag), t.len)) end
    tt = tt or root
    put(tt, RF.tlv_type, t.off, 2)
    put(tt, RF.tlv_len, t.off + 2, 2)
    local v = t.off + 4
    if t.len == 0 then
      -- empty value
    elseif t.tag == TLV.SOCKET_PATH then put(tt, RF.socket_path, v, t.len, safe(t.value))
    elseif (t.tag == TLV.CLIENT_CRED or t.tag == TLV.SERVER_CRED) and t.len >= 12 then
      local who = t.tag == TLV.CLIENT_CRED and "client" or "server"
      put(tt, RF[who .. "_pid"], v, 4)
      put(tt, RF[who .. "_uid"], v + 4, 4)
      put(tt, RF[who .. "_gid"], v + 8, 4)
    elseif t.tag == TLV.NOTE and r.rt ~= REC.FINDING then put(tt, RF.note, v, t.len, safe(t.value))
    elseif t.tag == TLV.FD_PATH and t.len >= 4 then
      put(tt, RF.fd_index, v, 2)
      if t.len > 4 then put(tt, RF.fd_path, v + 4, t.len - 4, safe(sub(t.value, 5))) end
    elseif t.tag == TLV.PROXY_ERRNO and t.len >= 4 then put(tt, RF.proxy_errno, v, 4)
    elseif t.tag == TLV.TWIN_OF and t.len >= 4 then put(tt, RF.twin_of, v, 4)
    elseif t.tag == TLV.ENGINE then put(tt, RF.engine, v, t.len, safe(t.value))
    elseif t.tag == TLV.TIMEOUT then put(tt, RF.timeout, v, t.len, safe(t.value))
    else put(tt, RF.tlv_value, v, t.len) end
  end
end

-- a FINDING record's own tree: the verdict, the frames it names (links), its expert item
local function display_finding(fnd, r, tree, root)
  local ft = tree
  if tree and ALL then
    ft = tree:add(vfu, TVB(C.VFUC_FIXED_SIZE, r.hdr_len - C.VFUC_FIXED_SIZE),
      fmt("vfio-user finding %s (%s)", fnd.code, fnd.sev))
  end
  if ft then
    local code = tlv(r, TLV.FINDING_CODE)
    local text = tlv(r, TLV.NOTE)
    put(ft, VF.finding, code.off + 4, code.len, fnd.code)
    local sev = tlv(r, TLV.SEVERITY)
    if sev and sev.len >= 1 then put(ft, VF.finding_severity, sev.off + 4, 1, fnd.rank)
    else put_generated(ft, VF.finding_severity, fnd.rank) end
    if text then put(ft, VF.finding_text, text.off + 4, text.len, fnd.text)
    else put_generated(ft, VF.finding_text, "") end
    local frames = tlv(r, TLV.FRAMES)
    for i, fr in ipairs(fnd.frames) do put(ft, VF.finding_frame, frames.off + 4 * i, 4, fr) end
    put(ft, VF.finding_conn, 8, 4)
  end
  finding_expert(ft or root, fnd)
end

-- Source and Destination: client#N / server#N, proxy#N for connection events, vfudissect for its verdicts
local ENDPOINTS = {}  -- conn -> {"client#N", "server#N", "proxy#N"}
local function set_endpoints(cols, conn, d, rt)
  if rt == REC.FINDING or rt == REC.VERDICTS then
    cols.src, cols.dst = "vfudissect", ""
    return
  end
  local e = ENDPOINTS[conn]
  if e == nil then
    e = {fmt("client#%d", conn), fmt("server#%d", conn), fmt("proxy#%d", conn)}
    ENDPOINTS[conn] = e
  end
  if d == C2S then
    cols.src, cols.dst = e[1], e[2]
  elseif d == S2C then
    cols.src, cols.dst = e[2], e[1]
  else
    cols.src, cols.dst = e[3], ""
  end
end

local function fds_ctx(r)
  local list = {}
  for i, fd in ipairs(r.fds) do list[i] = {kind = fd.kind, size = fd.size} end
  return list
end

-- fragments (first pass): reassembled as the reader does; returns the completed message, or nil
local function reassemble(r, s, frame, plen)
  local key = fmt("%d:%d:%d", r.conn, r.dir, r.msg_seq)
  local p = S.partial[key]
  local poff = r.payload_off
  if p == nil then
    if r.frag_off ~= 0 then
      S.corrupt[frame] = fmt("fragment at offset %d without its start", r.frag_off)
    else
      S.partial[key] = {r = r, parts = {sub(s, poff + 1)}, have = plen, frames = {frame}}
    end
    return
  end
  if r.frag_off ~= p.have then
    S.partial[key] = nil
    S.corrupt[frame] = fmt("fragment at offset %d, expected %d", r.frag_off, p.have)
    return
  end
  p.parts[#p.parts + 1] = sub(s, poff + 1)
  p.have = p.have + plen
  p.frames[#p.frames + 1] = frame
  if band(r.flags, VF_MORE) ~= 0 then return end
  S.partial[key] = nil
  local fr = p.r
  local data = concat(p.parts)
  S.reasm[frame] = {data = ByteArray.new(data, true), len = #data, frames = p.frames,
    flags = band(bor(fr.flags, r.flags), bnot(VF_MORE)), fds = fds_ctx(fr),
    msg_len = fr.msg_len ~= 0 and fr.msg_len or #data, note = tlv_text(fr, TLV.NOTE)}
  for _, f in ipairs(p.frames) do
    if f ~= frame then S.frag_in[f] = frame end
  end
end

-- the Info column of the records that are not messages
local function record_info(r)
  local rt = r.rt
  if rt == REC.CONN_OPEN then
    local sp, cc, tw = tlv(r, TLV.SOCKET_PATH), tlv(r, TLV.CLIENT_CRED), tlv(r, TLV.TWIN_OF)
    return fmt("#%d conn-open %s%s%s", r.conn, sp and safe(sp.value) or "",
      cc and cc.len >= 12 and fmt(" (client pid %d)", rd32(cc.value, 1)) or "",
      tw and tw.len >= 4 and fmt(" twin of #%d", rd32(tw.value, 1)) or "")
  elseif rt == REC.CONN_CLOSE then
    return fmt("#%d conn-close%s", r.conn, r.dir and (" " .. DIR_WORD[r.dir]) or "")
  elseif rt == REC.NOTE then
    return fmt("#%d note: %s", r.conn, safe(tlv_text(r, TLV.NOTE)))
  elseif rt == REC.VERDICTS then
    return "verdicts: " .. safe(tlv_text(r, TLV.NOTE))
  end
  return fmt("#%d record type %d (newer writer; skipped)", r.conn, rt)
end

-- a MSG or RAW record: whole, or a fragment (reassembled on the first pass); returns the Info text
local function message_record(tvb, pinfo, tree, r, s, n, frame, first, root, cols)
  local poff = r.payload_off
  local plen = n - poff
  local want_tree = root ~= nil
  local conn, d = r.conn, r.dir
  local data, base, mlen, vflags, fds = s, poff, plen, r.flags, r.fds
  local ra
  if not (r.fast or (r.frag_off == 0 and not has(r.flags, VF_MORE))) then
    if first then reassemble(r, s, frame, plen) end
    if want_tree and plen > 0 and G.rec then put(root, RF.payload, poff, plen) end
    local why = S.corrupt[frame]
    if why then  -- out of order: the record, not a message
      if want_tree then put_generated(root, RF.corrupt, why) end
      return cols and fmt("[%s%s]", C.NOTE_CORRUPT_PREFIX, why)
    end
    ra = S.reasm[frame]
    if ra == nil then
      local rin = S.frag_in[frame]
      if want_tree and G.rec then
        if rin ~= nil then put_generated(root, RF.reassembled_in, rin)
        elseif PASS.visited then put_generated(root, RF.incomplete, "the capture never completes this message") end
      end
      return cols and fmt("#%d %s [fragment at offset %d of %d]%s", conn, ARROW[d], r.frag_off, r.msg_len,
        rin and fmt(" reassembled in %d", rin) or "")
    end
    if want_tree and G.rec then
      put_generated(root, RF.reassembled_length, ra.len)
      put_generated(root, RF.fragment_count, #ra.frames)
      for _, f in ipairs(ra.frames) do put_generated(root, RF.fragment, f) end
    end
    data, base, mlen, vflags, fds = ra.data:raw(), 0, ra.len, ra.flags, ra.fds
    if want_tree and ra.len > 0 then TVB = ra.data:tvb("Reassembled vfio-user message") end
  end
  if r.rt == REC.RAW then
    if want_tree and ra == nil and plen > 0 and G.rec then put(root, RF.payload, poff, plen) end
    return cols and fmt("#%d %s raw %d bytes", conn, ARROW[d], mlen)
  end
  if first and LINKS and mlen >= 16 and r.rt == REC.MSG then  -- an ORIGINAL (withheld) message is not traffic
    local h1, h2, h3, h4, _, _, _, _, h9, h10, h11, h12 = byte(data, base + 1, base + 12)
    link(frame, pinfo.rel_ts, conn, d, h1 + h2 * 256, h3 + h4 * 256, h9 + h10 * 256 + h11 * 65536 + h12 * 16777216,
      vflags)
  end
  local item, text = display_message(data, base, mlen, want_tree and tree or nil, frame, fds, vflags, PASS.visited,
    cols and conn, d)
  if text and r.rt == REC.ORIGINAL then text = text .. " [withheld]" end
  return text, item
end

-- a FINDING record: its verdict kept for the frames it names (first pass), shown, its expert added
local function finding_record(r, frame, first, tree, item, cols)
  local fnd = finding_of(r, frame)
  if first then
    S.findings[#S.findings + 1] = fnd
    local seen = {}
    for _, fr in ipairs(fnd.frames) do
      if fr > 0 and not seen[fr] then
        seen[fr] = true
        local l = S.by_frame[fr]
        if l == nil then
          l = {}
          S.by_frame[fr] = l
        end
        l[#l + 1] = fnd
      end
    end
  end
  display_finding(fnd, r, tree, item)
  return cols and fmt("#%d finding %s %s: %s%s", r.conn, fnd.sev, fnd.code, fnd.text, frames_text(fnd.frames))
end

local function dissect_record(tvb, pinfo, tree)
  local s = tvb:raw()
  local n = #s
  local frame = pinfo.number
  tree_mode(pinfo, tree, frame)
  local first = not PASS.visited
  local want_tree, cols = WANT_TREE, WANT_COLS
  if QUIET and frame ~= 1 and n >= C.VFUC_FIXED_SIZE then
    local rt, _, _, _, _, _, _, _, flags, _, _, _, _, _, _, o1, o2, o3, o4 = byte(s, 6, 24)  -- type, flags, frag_off
    if rt == REC.MSG and o1 + o2 + o3 + o4 == 0 and not has(flags, VF_MORE) and not S.by_frame[frame] then return end
  end
  TVB = tvb
  local r = parse_record(s, n, pinfo.p2p_dir)
  local rt, conn = r.rt, r.conn or 0
  local root
  if want_tree then
    root = tree
    if ALL then
      root = tree:add(vfucap, tvb(), fmt("vfudissect capture record (VFUC), %s, connection %d",
        r.err and "corrupt" or E.REC_TYPE_NAMES[rt] or fmt("type %d", rt), conn))
    end
    if G.rec then display_record(r, root) end
  end
  local item = root or tree
  local columns = cols and pinfo.cols
  if cols then
    columns.protocol = "vfio-user"
    set_endpoints(columns, conn, r.dir, rt)
  end
  if frame == 1 and (r.err or rt ~= REC.VERDICTS) then item:add_proto_expert_info(EX_NO_VERDICTS, NO_VERDICTS_TEXT) end
  local info
  if r.err then
    if want_tree then put_generated(root, RF.corrupt, safe(r.err)) end
    info = cols and fmt("[%s%s]", C.NOTE_CORRUPT_PREFIX, safe(r.err))
  elseif rt == REC.MSG or rt == REC.RAW or rt == REC.ORIGINAL then
    local mitem
    info, mitem = message_record(tvb, pinfo, tree, r, s, n, frame, first, root, cols)
    item = mitem or item
  elseif rt == REC.FINDING then
    info = finding_record(r, frame, first, want_tree and tree or nil, item, cols)
  elseif rt == REC.IRQ then  -- an interrupt the server raised (record --watch-irqs)
    local _, v = add_struct(want_tree and root or nil, "irq_record", s, r.payload_off, 0)
    info = cols and fmt("#%d %s irq %s vector %d%s", conn, ARROW[S2C], E.PCI_IRQS[v.index] or
      fmt("IRQ index %d", v.index), v.vector, v.count ~= 1 and fmt(" ×%s", dec(v.count)) or "")
  else
    if first and rt == REC.CONN_CLOSE then closed(conn, r.dir or nil) end
    info = cols and record_info(r)
  end
  if PASS.visited then findings_on(frame, item, want_tree) end
  if info and columns then columns.info = info end
end

local function internal_error(tree, err)
  local it = tree:add(VF.internal_error, tostring(err))
  it:add_proto_expert_info(EX_INTERNAL, tostring(err))
end

function vfucap.dissector(tvb, pinfo, tree)
  local ok, err = pcall(dissect_record, tvb, pinfo, tree)
  TVB = nil
  if not ok then internal_error(tree, err) end
  return tvb:len()
end

-- vfio_user on its own (e.g. text2pcap -P vfio_user): decode only, no state
function vfu.dissector(tvb, pinfo, tree)
  local ok, err = pcall(function()
    tree_mode(pinfo, tree, 0)
    TVB = tvb
    pinfo.cols.protocol = "vfio-user"
    local s = tvb:raw()
    local _, text = display_message(s, 0, #s, tree, nil, NO_FDS, 0, false, 0, nil)
    pinfo.cols.info = text
  end)
  TVB = nil
  if not ok then internal_error(tree, err) end
  return tvb:len()
end

-- ======================================================================
-- Response times per command, like Service Response Time: Statistics > vfio-user > Response times (GUI),
-- `tshark -q -z vfio_user,srt`.  A tap over every frame that reads the links the dissector made; copies
-- (CONTEXT) of a rotated capture are not counted.
-- ======================================================================
local SRT_TITLE = "vfio-user response times (command to reply)"

local function srt_text(rows)
  local cmds = {}
  for cmd in pairs(rows) do cmds[#cmds + 1] = cmd end
  table.sort(cmds)
  local rule = string.rep("=", 78)
  local out = {rule, SRT_TITLE, fmt("%-32s %10s %11s %11s %11s", "Command", "Count", "Min (ms)", "Mean (ms)",
    "Max (ms)")}
  for _, cmd in ipairs(cmds) do
    local t = rows[cmd]
    out[#out + 1] = fmt("%-32s %10d %11.3f %11.3f %11.3f", cmd_name(cmd), t.n, t.min * 1e3, t.sum / t.n * 1e3,
      t.max * 1e3)
  end
  out[#out + 1] = rule
  return concat(out, "\n")
end

local function srt_listener(show)
  local rows = {}
  local tap = Listener.new("frame")
  function tap.packet(pinfo)
    local _, cmd, rtt, ctx = links_get(S.links, pinfo.number)
    if rtt == nil or ctx then return end
    local t = rows[cmd]
    if t == nil then
      rows[cmd] = {n = 1, min = rtt, max = rtt, sum = rtt}
    else
      t.n, t.sum = t.n + 1, t.sum + rtt
      if rtt < t.min then t.min = rtt end
      if rtt > t.max then t.max = rtt end
    end
  end
  function tap.reset() rows = {} end
  function tap.draw() show(srt_text(rows)) end
  return tap
end

register_stat_cmd_arg("vfio_user,srt", function() srt_listener(print) end)

if gui_enabled() then
  register_menu("vfio-user/Response times", function()
    local tw = TextWindow.new(SRT_TITLE)
    local tap = srt_listener(function(text) tw:set(text) end)
    tw:set_atclose(function() tap:remove() end)
    retap_packets()
  end, MENU_STAT_GENERIC)
end
