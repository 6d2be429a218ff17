#!/bin/sh
# Applies reelay's CORS rule to the bucket, so that players in browsers can
# fetch what the api presigns (HLS and DASH segments, posters, originals):
# GET and HEAD from the origins in REELAY_CORS_ORIGINS (comma-separated;
# default *), any request header (Range), exposing Content-Length,
# Content-Range and ETag. Works against Garage and any S3 that implements
# PutBucketCors; needs curl (7.75+ for --aws-sigv4). Idempotent.
#
# With a list of origins, `null` is allowed too: a DASH segment is fetched
# through the api's 302 to its presigned URL, and a browser sends
# `Origin: null` after a cross-origin redirect. A presigned URL is its own
# credential; CORS only decides which pages may read it.
set -eu
ENDPOINT=${REELAY_S3_ENDPOINT:-http://127.0.0.1:3900}
REGION=${REELAY_S3_REGION:-garage}
BUCKET=${REELAY_S3_BUCKET:-reelay}
KEY_ID=${REELAY_S3_ACCESS_KEY_ID:-GK0123456789abcdef01234567}
SECRET=${REELAY_S3_SECRET_ACCESS_KEY:-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}
ORIGINS=${REELAY_CORS_ORIGINS:-*}

allowed=""
set -f  # `*` is an origin here, not a glob
old_ifs=$IFS; IFS=,
for origin in $ORIGINS; do
  origin=$(printf '%s' "$origin" | tr -d ' ')
  [ -n "$origin" ] && allowed="$allowed<AllowedOrigin>$origin</AllowedOrigin>"
done
IFS=$old_ifs
set +f
case ",$ORIGINS," in
  *",*,"*) ;;
  *) allowed="$allowed<AllowedOrigin>null</AllowedOrigin>" ;;
esac
rule="<CORSConfiguration><CORSRule>$allowed<AllowedMethod>GET</AllowedMethod><AllowedMethod>HEAD</AllowedMethod><AllowedHeader>*</AllowedHeader><ExposeHeader>Content-Length</ExposeHeader><ExposeHeader>Content-Range</ExposeHeader><ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>86400</MaxAgeSeconds></CORSRule></CORSConfiguration>"

# AWS S3 wants a Content-MD5 with it; Garage does not.
md5=""
if command -v openssl >/dev/null 2>&1; then
  md5=$(printf '%s' "$rule" | openssl md5 -binary | openssl base64)
fi
curl -sS --fail-with-body -o /dev/null \
  --aws-sigv4 "aws:amz:$REGION:s3" --user "$KEY_ID:$SECRET" \
  -X PUT "$ENDPOINT/$BUCKET?cors=" \
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
  -H "Content-Type: application/xml" \
  ${md5:+-H "Content-MD5: $md5"} \
  --data-binary "$rule"
printf '[bucket-cors] %s: GET and HEAD from %s\n' "$BUCKET" "$ORIGINS"
